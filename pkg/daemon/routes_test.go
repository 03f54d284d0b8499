package daemon

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/metrics"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/route"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

type syncRig struct {
	s        *syncer
	store    *fakeStore
	kernel   *fakeRoutes
	clock    *clockwork.FakeClock
	lost     atomic.Int32
	syncs    atomic.Int32
	unsynced atomic.Int32 // reconciles that could program nothing
}

func via(dst, gw string) route.Route { return route.Route{Dst: pfx(dst), Gateway: ip(gw)} }

// newSyncRig returns a syncer for node 21 (172.7.21.0/24, selfIP) whose
// lease is in store, over kernel.
func newSyncRig(t *testing.T, kernel *fakeRoutes) *syncRig {
	t.Helper()
	r := &syncRig{store: newFakeStore(t, "172.7.0.0/16"), kernel: kernel, clock: clockwork.NewFakeClock()}
	r.store.put(pfx("172.7.21.0/24"), selfIP, 1)
	own, _ := r.store.get(pfx("172.7.21.0/24"))
	st := &state{}
	st.setLease(r.store.network, &own, subnetfile.ForLease(r.store.network.Network, own.Subnet, 1500, true))
	r.s = &syncer{store: r.store, routes: kernel, clock: r.clock, log: discard, metrics: metrics.New(),
		state: st, relist: DefaultRelist,
		lost: func(int64) { r.lost.Add(1) }, synced: func(ok bool) {
			if ok {
				r.syncs.Add(1)
			} else {
				r.unsynced.Add(1)
			}
		}}
	return r
}

func (r *syncRig) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.s.run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// routes returns the kernel's routes in the cluster network, sorted.
func (r *syncRig) routes() []route.Route {
	out, _ := r.kernel.List(pfx("0.0.0.0/0"))
	slices.SortFunc(out, func(a, b route.Route) int { return a.Dst.Addr().Compare(b.Dst.Addr()) })
	return out
}

func (r *syncRig) waitRoutes(t *testing.T, what string, want ...route.Route) {
	t.Helper()
	eventually(t, what, func() bool { return slices.Equal(r.routes(), want) }, nil)
}

func (r *syncRig) metric(t *testing.T, name string, labels ...string) float64 {
	return metricValue(t, r.s.metrics.Registry(), name, labels...)
}

var (
	bridgeRoute = route.Route{Dst: pfx("172.7.21.0/24"), LinkIndex: 5} // connected, the bridge
	outside     = via("10.50.0.0/16", "10.4.7.1")
)

func TestSyncerFullSyncPrunesAndAdds(t *testing.T) {
	kernel := newFakeRoutes(outside, bridgeRoute,
		via("172.7.22.0/24", "10.4.7.99"), // node 22 moved since
		via("172.7.40.0/24", "10.4.7.40"), // lease vanished while the daemon was down
	)
	r := newSyncRig(t, kernel)
	r.store.put(pfx("172.7.22.0/24"), "10.4.7.22", 2)
	r.store.put(pfx("172.7.23.0/24"), "10.4.7.23", 0) // a reservation routes like a lease
	r.store.put(pfx("172.7.50.0/24"), selfIP, 3)      // this node's stray second lease
	r.start(t)
	r.waitRoutes(t, "routes after the first sync", outside, bridgeRoute,
		via("172.7.22.0/24", "10.4.7.22"), via("172.7.23.0/24", "10.4.7.23"))
	if got := r.metric(t, "weft_peers"); got != 2 {
		t.Errorf("peers = %v, want 2", got)
	}
	if got := r.metric(t, "weft_routes_programmed"); got != 2 {
		t.Errorf("routes programmed = %v, want 2", got)
	}
	if got := r.metric(t, "weft_route_changes_total", "op", "remove"); got != 1 {
		t.Errorf("routes removed = %v, want 1", got)
	}
	if r.lost.Load() != 0 {
		t.Error("own lease reported lost")
	}
}

func TestSyncerFollowsWatch(t *testing.T) {
	r := newSyncRig(t, newFakeRoutes())
	r.store.put(pfx("172.7.22.0/24"), "10.4.7.22", 2)
	r.store.put(pfx("172.7.23.0/24"), "10.4.7.23", 3)
	r.start(t)
	r.waitRoutes(t, "initial routes", via("172.7.22.0/24", "10.4.7.22"), via("172.7.23.0/24", "10.4.7.23"))

	r.store.put(pfx("172.7.24.0/24"), "10.4.7.24", 4) // joins
	r.waitRoutes(t, "route to the new node", via("172.7.22.0/24", "10.4.7.22"), via("172.7.23.0/24", "10.4.7.23"), via("172.7.24.0/24", "10.4.7.24"))

	r.store.put(pfx("172.7.22.0/24"), "10.4.7.32", 2) // changes its public IP
	r.waitRoutes(t, "route following the new IP", via("172.7.22.0/24", "10.4.7.32"), via("172.7.23.0/24", "10.4.7.23"), via("172.7.24.0/24", "10.4.7.24"))

	r.store.del(pfx("172.7.23.0/24")) // leaves
	r.waitRoutes(t, "route of the departed node removed", via("172.7.22.0/24", "10.4.7.32"), via("172.7.24.0/24", "10.4.7.24"))
	if _, lists := r.store.counts(); lists != 1 {
		t.Errorf("%d lists, want 1: changes come from the watch", lists)
	}
}

func TestSyncerRelistsOnCompaction(t *testing.T) {
	r := newSyncRig(t, newFakeRoutes())
	r.store.put(pfx("172.7.22.0/24"), "10.4.7.22", 2)
	r.start(t)
	r.waitRoutes(t, "initial routes", via("172.7.22.0/24", "10.4.7.22"))
	r.store.pauseWatches() // the watch misses these, as if disconnected
	r.store.del(pfx("172.7.22.0/24"))
	r.store.put(pfx("172.7.25.0/24"), "10.4.7.25", 4)
	r.store.compactAll()
	r.waitRoutes(t, "routes after the re-list", via("172.7.25.0/24", "10.4.7.25"))
	if got := r.metric(t, "weft_watch_restarts_total", "reason", "compacted"); got != 1 {
		t.Errorf("compaction restarts = %v, want 1", got)
	}
}

func TestSyncerRelistsPeriodically(t *testing.T) {
	r := newSyncRig(t, newFakeRoutes())
	r.start(t)
	eventually(t, "first list", func() bool { _, n := r.store.counts(); return n == 1 }, nil)
	eventually(t, "a periodic re-list", func() bool { _, n := r.store.counts(); return n >= 3 },
		func() { r.clock.Advance(DefaultRelist) })
	if got := r.metric(t, "weft_watch_restarts_total", "reason", "periodic"); got < 2 {
		t.Errorf("periodic restarts = %v, want at least 2", got)
	}
}

func TestSyncerListFailureKeepsRoutes(t *testing.T) {
	r := newSyncRig(t, newFakeRoutes(via("172.7.22.0/24", "10.4.7.22")))
	r.store.setDown(true)
	r.start(t)
	eventually(t, "list errors", func() bool { return r.metric(t, "weft_reconcile_errors_total", "kind", "list") >= 2 },
		func() { r.clock.Advance(maxBackoff * 2) })
	if got := r.routes(); !slices.Equal(got, []route.Route{via("172.7.22.0/24", "10.4.7.22")}) {
		t.Errorf("routes changed while etcd is down: %v", got)
	}
	r.store.put(pfx("172.7.23.0/24"), "10.4.7.23", 5)
	r.store.setDown(false)
	eventually(t, "routes after etcd returns", func() bool {
		return slices.Equal(r.routes(), []route.Route{via("172.7.23.0/24", "10.4.7.23")})
	}, func() { r.clock.Advance(maxBackoff * 2) })
}

func TestSyncerOwnKeyRemovedOrTaken(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(*fakeStore)
	}{
		{"deleted", func(f *fakeStore) { f.del(pfx("172.7.21.0/24")) }},
		{"rewritten by another node", func(f *fakeStore) { f.put(pfx("172.7.21.0/24"), "10.4.7.99", 9) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newSyncRig(t, newFakeRoutes())
			r.start(t)
			eventually(t, "first sync", func() bool { return r.syncs.Load() > 0 }, nil)
			tt.change(r.store)
			eventually(t, "lost signal", func() bool { return r.lost.Load() > 0 }, nil)
		})
	}
}

func TestSyncerRepairsKernelRoutes(t *testing.T) {
	r := newSyncRig(t, newFakeRoutes())
	r.store.put(pfx("172.7.22.0/24"), "10.4.7.22", 2)
	r.start(t)
	r.waitRoutes(t, "initial routes", via("172.7.22.0/24", "10.4.7.22"))
	r.kernel.Delete(via("172.7.22.0/24", "10.4.7.22"))  // someone else deletes it
	r.kernel.Replace(via("172.7.60.0/24", "10.4.7.60")) // or adds a stray one
	r.s.reconcile(context.Background())
	if got := r.routes(); !slices.Equal(got, []route.Route{via("172.7.22.0/24", "10.4.7.22")}) {
		t.Errorf("routes after repair = %v", got)
	}
}

func TestSyncerWaitsForOwnLease(t *testing.T) {
	r := newSyncRig(t, newFakeRoutes(via("172.7.40.0/24", "10.4.7.40")))
	own := *r.s.state.get().own
	r.s.state = &state{} // no lease yet
	r.store.put(pfx("172.7.22.0/24"), "10.4.7.22", 2)
	r.start(t)
	eventually(t, "first list", func() bool { _, n := r.store.counts(); return n == 1 }, nil)
	r.s.reconcile(context.Background())
	if got := r.routes(); !slices.Equal(got, []route.Route{via("172.7.40.0/24", "10.4.7.40")}) {
		t.Errorf("routes touched before the node has a lease: %v", got)
	}
	r.s.state.setLease(r.store.network, &own, subnetfile.ForLease(r.store.network.Network, own.Subnet, 1500, true))
	r.s.reconcile(context.Background())
	if got := r.routes(); !slices.Equal(got, []route.Route{via("172.7.22.0/24", "10.4.7.22")}) {
		t.Errorf("routes once the lease is known: %v", got)
	}
}

func TestPeersLeaveOutSelf(t *testing.T) {
	s := &syncer{log: discard, leases: map[netip.Prefix]lease.Lease{}}
	add := func(subnet, publicIP string) {
		s.leases[pfx(subnet)] = lease.Lease{Subnet: pfx(subnet), Attrs: lease.Attrs{PublicIP: ip(publicIP)}}
	}
	add("172.7.23.0/24", "10.4.7.23")
	add("172.7.21.0/24", selfIP)
	add("172.7.22.0/24", "10.4.7.22")
	add("172.7.50.0/24", selfIP)
	own := s.leases[pfx("172.7.21.0/24")]
	got := s.peersLocked(&own)
	want := []route.Peer{{Subnet: pfx("172.7.22.0/24"), PublicIP: ip("10.4.7.22")}, {Subnet: pfx("172.7.23.0/24"), PublicIP: ip("10.4.7.23")}}
	if !slices.Equal(got, want) {
		t.Errorf("peers = %v, want %v", got, want)
	}
}

// TestSyncerUnsyncedWhenRoutesUnreadable: a reconcile that cannot read the
// route table programs nothing, and says so (the node is then not ready),
// after earlier ones succeeded.
func TestSyncerUnsyncedWhenRoutesUnreadable(t *testing.T) {
	r := newSyncRig(t, newFakeRoutes())
	r.store.put(pfx("172.7.22.0/24"), "10.4.7.22", 2)
	r.start(t)
	r.waitRoutes(t, "initial routes", via("172.7.22.0/24", "10.4.7.22"))
	r.kernel.mu.Lock()
	r.kernel.listErr = syscall.EPERM
	r.kernel.mu.Unlock()
	r.s.reconcile(context.Background())
	if r.unsynced.Load() == 0 {
		t.Fatal("a reconcile that could not list routes was reported as synced")
	}
}

// leaseDuringConfigRead is a store whose network config read lets the
// keeper acquire a lease under the new config while it is in flight.
type leaseDuringConfigRead struct {
	*fakeStore
	during func()
}

func (s leaseDuringConfigRead) NetworkConfig(ctx context.Context) (*netconf.Config, error) {
	s.during()
	return s.fakeStore.NetworkConfig(ctx)
}

// TestCheckConfigRacesANewLease: etcd's config changes and the keeper
// acquires a lease under it while checkConfig's read is in flight. The
// finding, against the config the node ran before, must not stick to the
// node that now runs etcd's config.
func TestCheckConfigRacesANewLease(t *testing.T) {
	store := newFakeStore(t, "172.7.0.0/16")
	old := store.network
	st := &state{}
	own := lease.Lease{Subnet: pfx("172.7.21.0/24"), Attrs: lease.Attrs{PublicIP: ip(selfIP)}}
	st.setLease(old, &own, subnetfile.ForLease(old.Network, own.Subnet, 1500, true))
	wide, err := netconf.Parse([]byte(`{"Network":"172.6.0.0/15","Backend":{"Type":"host-gw"}}`))
	if err != nil {
		t.Fatal(err)
	}
	s := &syncer{log: discard, state: st, store: leaseDuringConfigRead{store, func() {
		store.setNetwork(wide)
		again := lease.Lease{Subnet: pfx("172.6.21.0/24"), Attrs: own.Attrs}
		st.setLease(wide, &again, subnetfile.ForLease(wide.Network, again.Subnet, 1500, true))
	}}}
	s.checkConfig(context.Background())
	if _, why := st.readiness(time.Now()); strings.Contains(strings.Join(why, ";"), "network config") {
		t.Errorf("not ready over the config the node now runs: %q", why)
	}
}

// TestSameNetwork: what counts as a changed network config for a node.
func TestSameNetwork(t *testing.T) {
	parse := func(raw string) *netconf.Config {
		t.Helper()
		c, err := netconf.Parse([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	hostGW := parse(`{"Network":"172.7.0.0/16","Backend":{"Type":"host-gw"}}`)
	for _, tc := range []struct {
		raw  string
		same bool
	}{
		{`{"Network":"172.7.0.0/16"}`, true}, // host-gw by default
		{`{"Network":"172.7.0.0/16","Backend":{"Type":"host-gw","DirectRouting":true}}`, true},
		{`{"Network":"172.6.0.0/15","Backend":{"Type":"host-gw"}}`, false},
		{`{"Network":"172.7.0.0/16","SubnetLen":25,"Backend":{"Type":"host-gw"}}`, false},
		{`{"Network":"172.7.0.0/16","Backend":{"Type":"vxlan"}}`, false},
	} {
		if got := sameNetwork(parse(tc.raw), hostGW); got != tc.same {
			t.Errorf("sameNetwork(%s, host-gw /16) = %t, want %t", tc.raw, got, tc.same)
		}
	}
	vxlan := parse(`{"Network":"172.7.0.0/16","Backend":{"Type":"vxlan"}}`)
	if sameNetwork(parse(`{"Network":"172.7.0.0/16","Backend":{"Type":"vxlan","VNI":2}}`), vxlan) {
		t.Error("a vxlan network with another VNI counted as the same")
	}
	if sameNetwork(parse(`{"Network":"172.7.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}`), vxlan) {
		t.Error("vxlan with DirectRouting counted as the same as without")
	}
}
