package route

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
)

var (
	network = netip.MustParsePrefix("172.7.0.0/16")
	self    = netip.MustParsePrefix("172.7.21.0/24")
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

// via is a host-gw route, the shape HostGW produces.
func via(dst, gw string) Route { return Route{Dst: pfx(dst), Gateway: ip(gw)} }

func TestHostGW(t *testing.T) {
	peers := []Peer{
		{Subnet: pfx("172.7.22.0/24"), PublicIP: ip("10.4.7.22")},
		{Subnet: pfx("172.7.21.0/24"), PublicIP: ip("10.4.7.21")}, // self
		{Subnet: pfx("172.7.23.9/24"), PublicIP: ip("::ffff:10.4.7.23")},
		{Subnet: pfx("172.7.22.0/24"), PublicIP: ip("10.4.7.99")}, // claims a taken subnet
		{Subnet: pfx("172.7.24.0/24")},                            // no address
		{PublicIP: ip("10.4.7.25")},                               // no subnet
	}
	got := HostGW(peers, self)
	want := []Route{via("172.7.22.0/24", "10.4.7.22"), via("172.7.23.0/24", "10.4.7.23")}
	if !slices.Equal(got, want) {
		t.Errorf("HostGW = %v, want %v", got, want)
	}
	if got := HostGW(nil, self); len(got) != 0 {
		t.Errorf("HostGW(nil) = %v", got)
	}
}

func TestDiff(t *testing.T) {
	onLink := Route{Dst: pfx("172.7.22.0/24"), Gateway: ip("10.4.7.22"), LinkIndex: 3, OnLink: true}
	tests := []struct {
		name            string
		desired, actual []Route
		upsert, remove  []Route
	}{
		{name: "both empty"},
		{name: "all missing",
			desired: []Route{via("172.7.23.0/24", "10.4.7.23"), via("172.7.22.0/24", "10.4.7.22")},
			upsert:  []Route{via("172.7.22.0/24", "10.4.7.22"), via("172.7.23.0/24", "10.4.7.23")}},
		{name: "in place",
			desired: []Route{via("172.7.22.0/24", "10.4.7.22")},
			actual:  []Route{{Dst: pfx("172.7.22.0/24"), Gateway: ip("10.4.7.22"), LinkIndex: 2}}},
		{name: "gateway changed",
			desired: []Route{via("172.7.22.0/24", "10.4.7.32")},
			actual:  []Route{via("172.7.22.0/24", "10.4.7.22")},
			upsert:  []Route{via("172.7.22.0/24", "10.4.7.32")}},
		{name: "stale",
			desired: []Route{via("172.7.22.0/24", "10.4.7.22")},
			actual:  []Route{via("172.7.40.0/24", "10.4.7.40"), via("172.7.22.0/24", "10.4.7.22")},
			remove:  []Route{via("172.7.40.0/24", "10.4.7.40")}},
		{name: "link and on-link must match when given",
			desired: []Route{onLink},
			actual:  []Route{{Dst: onLink.Dst, Gateway: onLink.Gateway, LinkIndex: 3}},
			upsert:  []Route{onLink}},
		{name: "other link",
			desired: []Route{onLink},
			actual:  []Route{{Dst: onLink.Dst, Gateway: onLink.Gateway, LinkIndex: 4, OnLink: true}},
			upsert:  []Route{onLink}},
		{name: "one of two routes to a destination matches",
			desired: []Route{via("172.7.22.0/24", "10.4.7.22")},
			actual:  []Route{via("172.7.22.0/24", "10.4.7.99"), via("172.7.22.0/24", "10.4.7.22")}},
		{name: "destination named twice, first wins",
			desired: []Route{via("172.7.22.0/24", "10.4.7.22"), via("172.7.22.0/24", "10.4.7.99")},
			upsert:  []Route{via("172.7.22.0/24", "10.4.7.22")}},
		{name: "unmasked destinations",
			desired: []Route{via("172.7.22.1/24", "10.4.7.22")},
			actual:  []Route{via("172.7.22.0/24", "10.4.7.22")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			upsert, remove := Diff(tt.desired, tt.actual)
			if !slices.Equal(upsert, tt.upsert) || !slices.Equal(remove, tt.remove) {
				t.Errorf("Diff = upsert %v remove %v\nwant upsert %v remove %v", upsert, remove, tt.upsert, tt.remove)
			}
			// Order independence: shuffled inputs give the same answer.
			d, a := slices.Clone(tt.desired), slices.Clone(tt.actual)
			slices.Reverse(d)
			slices.Reverse(a)
			if tt.name == "destination named twice, first wins" {
				return // reversing changes which one is first
			}
			u2, r2 := Diff(d, a)
			if !slices.Equal(u2, upsert) || !slices.Equal(r2, remove) {
				t.Errorf("reversed input: upsert %v remove %v", u2, r2)
			}
		})
	}
}

// fakeProgrammer holds routes in memory. List returns every route, inside
// the network or not, so that Reconcile's own filtering is tested.
type fakeProgrammer struct {
	routes      map[netip.Prefix]Route
	fail        map[netip.Prefix]error // Replace and Delete fail for these
	failReplace map[netip.Prefix]error // only Replace fails for these
	listErr     error
	writes      int
}

func newFake(routes ...Route) *fakeProgrammer {
	f := &fakeProgrammer{routes: map[netip.Prefix]Route{}, fail: map[netip.Prefix]error{}}
	for _, r := range routes {
		f.routes[r.Dst] = r
	}
	return f
}

func (f *fakeProgrammer) List(netip.Prefix) ([]Route, error) {
	if f.listErr != nil {
		return nil, f.listErr
	}
	var out []Route
	for _, r := range f.routes {
		out = append(out, r)
	}
	return out, nil
}

func (f *fakeProgrammer) Replace(r Route) error {
	f.writes++
	if err := cmp.Or(f.fail[r.Dst], f.failReplace[r.Dst]); err != nil {
		return err
	}
	f.routes[r.Dst] = r
	return nil
}

func (f *fakeProgrammer) Delete(r Route) error {
	f.writes++
	if err := f.fail[r.Dst]; err != nil {
		return err
	}
	delete(f.routes, r.Dst)
	return nil
}

func (f *fakeProgrammer) sorted() []Route {
	out, _ := f.List(network)
	slices.SortFunc(out, compareRoutes)
	return out
}

var (
	connected = Route{Dst: self, LinkIndex: 5}    // the bridge's own subnet
	outside   = via("10.50.0.0/16", "10.4.7.1")   // not ours
	whole     = Route{Dst: network, LinkIndex: 7} // e.g. a vxlan device route
	peer22    = via("172.7.22.0/24", "10.4.7.22")
	peer23    = via("172.7.23.0/24", "10.4.7.23")
	stale40   = via("172.7.40.0/24", "10.4.7.40")                          // lease vanished
	moved22   = via("172.7.22.0/24", "10.4.7.32")                          // lease moved
	far23     = Route{Dst: pfx("172.7.23.0/24"), Gateway: ip("10.9.0.23")} // not on the segment
)

func TestReconcile(t *testing.T) {
	unreachable := fmt.Errorf("netlink route replace: %w", syscall.ENETUNREACH)
	tests := []struct {
		name    string
		actual  []Route
		desired []Route
		prune   bool
		fail    map[netip.Prefix]error
		want    []Route
		result  Result
		errs    []string
	}{
		{name: "fresh", actual: []Route{connected, outside},
			desired: []Route{peer22, peer23, {Dst: self, Gateway: ip("10.4.7.21")}},
			want:    []Route{outside, connected, peer22, peer23}, result: Result{Upserted: 2}},
		{name: "in place", actual: []Route{connected, peer22, peer23},
			desired: []Route{peer23, peer22}, prune: true,
			want: []Route{connected, peer22, peer23}},
		{name: "gateway changed", actual: []Route{peer22, peer23},
			desired: []Route{moved22, peer23},
			want:    []Route{moved22, peer23}, result: Result{Upserted: 1}},
		{name: "stale kept without prune", actual: []Route{peer22, stale40},
			desired: []Route{peer22},
			want:    []Route{peer22, stale40}},
		{name: "stale removed with prune; self, outside and whole-network routes kept",
			actual:  []Route{outside, connected, whole, peer22, stale40},
			desired: []Route{peer22}, prune: true,
			want: []Route{outside, whole, connected, peer22}, result: Result{Removed: 1}},
		{name: "unreachable gateway does not stop the others", actual: []Route{stale40},
			desired: []Route{peer22, far23}, prune: true,
			fail: map[netip.Prefix]error{far23.Dst: unreachable},
			want: []Route{peer22}, result: Result{Upserted: 1, Removed: 1, Failed: 1},
			errs: []string{"route to 172.7.23.0/24 via 10.9.0.23: gateway not directly reachable; host-gw needs peers on one segment: netlink route replace: network is unreachable"}},
		{name: "failures joined", actual: []Route{stale40},
			desired: []Route{peer22, peer23, via("10.60.0.0/24", "10.4.7.60")}, prune: true,
			fail: map[netip.Prefix]error{peer22.Dst: syscall.EPERM, stale40.Dst: syscall.EPERM},
			want: []Route{peer23, stale40}, result: Result{Upserted: 1, Failed: 2},
			errs: []string{
				"route to 10.60.0.0/24 via 10.4.7.60: outside the cluster network 172.7.0.0/16",
				"replacing route to 172.7.22.0/24 via 10.4.7.22: operation not permitted",
				"removing route to 172.7.40.0/24 via 10.4.7.40: operation not permitted",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(tt.actual...)
			for dst, err := range tt.fail {
				f.fail[dst] = err
			}
			res, err := Reconcile(f, network, self, tt.desired, tt.prune)
			if res != tt.result {
				t.Errorf("result = %+v, want %+v", res, tt.result)
			}
			if got := f.sorted(); !slices.Equal(got, tt.want) {
				t.Errorf("routes = %v\nwant %v", got, tt.want)
			}
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if !slices.Equal(got, tt.errs) {
				t.Errorf("errors = %q\nwant %q", got, tt.errs)
			}
			for dst, want := range tt.fail {
				if !errors.Is(err, want) {
					t.Errorf("error does not wrap the failure for %s: %v", dst, err)
				}
			}
			if tt.errs != nil && strings.Contains(tt.name, "unreachable") && !errors.Is(err, syscall.ENETUNREACH) {
				t.Errorf("errors.Is(err, ENETUNREACH) = false for %v", err)
			}
		})
	}
}

func TestReconcileIdempotent(t *testing.T) {
	f := newFake(connected)
	desired := []Route{peer22, peer23}
	if _, err := Reconcile(f, network, self, desired, true); err != nil {
		t.Fatal(err)
	}
	f.writes = 0
	res, err := Reconcile(f, network, self, desired, true)
	if err != nil || res != (Result{}) || f.writes != 0 {
		t.Errorf("second Reconcile = %+v, %v with %d writes", res, err, f.writes)
	}
}

// A lease moved to a gateway that cannot be reached: the route to the
// former holder goes, rather than keep sending the subnet's traffic to an
// address that may belong to another host now.
func TestReconcileDropsRouteItCannotReplace(t *testing.T) {
	f := newFake(peer22)
	f.failReplace = map[netip.Prefix]error{peer22.Dst: fmt.Errorf("netlink route replace: %w", syscall.ENETUNREACH)}
	res, err := Reconcile(f, network, self, []Route{moved22}, true)
	if !errors.Is(err, syscall.ENETUNREACH) {
		t.Fatalf("err %v, want the replace failure", err)
	}
	if _, ok := f.routes[peer22.Dst]; ok || res.Removed != 1 {
		t.Errorf("routes %v, removed %d: the route to the former holder must go", f.sorted(), res.Removed)
	}
}

// A route that differs only in how it reaches the same gateway (vxlan with
// DirectRouting switching between overlay and direct) stays when its
// replacement fails: it still leads to the subnet's holder.
func TestReconcileKeepsRouteToSameGateway(t *testing.T) {
	overlay := Route{Dst: peer22.Dst, Gateway: peer22.Gateway, LinkIndex: 9, OnLink: true}
	f := newFake(overlay)
	f.failReplace = map[netip.Prefix]error{peer22.Dst: syscall.EBUSY}
	if _, err := Reconcile(f, network, self, []Route{peer22}, true); err == nil {
		t.Fatal("the failed replace was not reported")
	}
	if got, ok := f.routes[peer22.Dst]; !ok || got != overlay {
		t.Errorf("route to the same gateway removed after a failed replace: %v", f.sorted())
	}
}

func TestReconcileListError(t *testing.T) {
	f := newFake()
	f.listErr = syscall.EPERM
	_, err := Reconcile(f, network, self, []Route{peer22}, true)
	if !errors.Is(err, syscall.EPERM) || !errors.Is(err, ErrList) || !strings.Contains(err.Error(), "listing routes in 172.7.0.0/16") {
		t.Errorf("error = %v", err)
	}
	if f.writes != 0 {
		t.Errorf("%d writes after a failed list", f.writes)
	}
}

// peers returns n peers in 10.0.0.0/8 with /24 subnets, self being the first.
func peers(n int) []Peer {
	out := make([]Peer, n)
	for i := range out {
		out[i] = Peer{
			Subnet:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24),
			PublicIP: netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}),
		}
	}
	return out
}

func BenchmarkDiff(b *testing.B) {
	ps := peers(5000)
	desired := HostGW(ps, ps[0].Subnet)
	// The kernel side: 1% of the routes point at an old gateway, 1% are for
	// vanished leases, 1% are missing, in another order.
	actual := slices.Clone(desired)
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(actual), func(i, j int) { actual[i], actual[j] = actual[j], actual[i] })
	for i := range 50 {
		actual[i].Gateway = ip("192.0.2.1")
		actual[50+i].Dst = netip.PrefixFrom(netip.AddrFrom4([4]byte{11, 0, byte(i), 0}), 24)
	}
	actual = actual[:len(actual)-50]

	b.ReportAllocs()
	for b.Loop() {
		upsert, remove := Diff(desired, actual)
		if len(upsert) != 150 || len(remove) != 50 {
			b.Fatalf("upsert %d, remove %d", len(upsert), len(remove))
		}
	}
}
