package lease

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestAcquireNewAndReuse(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, seedConfig)
	first, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if !cfg.Contains(first.Subnet) || !first.Reservation() || !first.Expiration.IsZero() {
		t.Fatalf("Acquire = %+v: want a reservation in %s", first, cfg.Network)
	}
	resp, err := s.cli.Get(ctx, SubnetKey(s.Prefix(), first.Subnet))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("reading key: %v", err)
	}
	if got := string(resp.Kvs[0].Value); got != `{"PublicIP":"10.4.7.21","PublicIPv6":null,"BackendType":"host-gw"}` {
		t.Errorf("stored value %s", got)
	}
	// The same node gets the same subnet, even with another preference or a TTL.
	again, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{TTL: time.Hour, Prefer: netip.MustParsePrefix("172.7.99.0/24")})
	if err != nil {
		t.Fatalf("Acquire again: %v", err)
	}
	if again.Subnet != first.Subnet || again.ModRevision != first.ModRevision || !again.Reservation() {
		t.Errorf("reacquired %+v, want the unchanged reservation %+v", again, first)
	}
}

func TestAcquireTTL(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, seedConfig)
	start := time.Now()
	l, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{TTL: time.Hour})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if l.Reservation() || l.EtcdLease == 0 {
		t.Fatalf("Acquire with TTL gave a reservation: %+v", l)
	}
	if d := l.Expiration.Sub(start); d < time.Hour-5*time.Second || d > time.Hour+5*time.Second {
		t.Errorf("expiration %v after start, want about 1h", d)
	}
	// Reuse keeps the etcd lease and rewrites the value with it attached.
	changed := hostGW("10.4.7.21")
	changed.BackendType = "vxlan"
	changed.BackendData = []byte(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`)
	again, err := s.Acquire(ctx, cfg, changed, AcquireOptions{TTL: time.Hour})
	if err != nil {
		t.Fatalf("Acquire again: %v", err)
	}
	if again.Subnet != l.Subnet || again.EtcdLease != l.EtcdLease || again.Expiration.IsZero() {
		t.Errorf("reacquired %+v, want subnet %s on etcd lease %x", again, l.Subnet, l.EtcdLease)
	}
	got, err := s.Get(ctx, l.Subnet)
	if err != nil || got.EtcdLease != l.EtcdLease || got.Attrs.BackendType != "vxlan" {
		t.Errorf("after rewrite: %+v, %v", got, err)
	}
}

func TestAcquirePrefer(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, seedConfig)
	prefer := netip.MustParsePrefix("172.7.21.0/24")
	a, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{Prefer: prefer})
	if err != nil || a.Subnet != prefer {
		t.Fatalf("Acquire(Prefer %s) = %v, %v", prefer, a, err)
	}
	// Held by A: B must get another one.
	b, err := s.Acquire(ctx, cfg, hostGW("10.4.7.22"), AcquireOptions{Prefer: prefer})
	if err != nil || b.Subnet == prefer {
		t.Fatalf("Acquire(Prefer %s held by A) = %v, %v", prefer, b, err)
	}
	// Outside the network or misaligned: ignored.
	for i, p := range []string{"10.9.0.0/24", "172.7.0.0/24", "172.7.30.0/25"} {
		l, err := s.Acquire(ctx, cfg, hostGW(fmt.Sprintf("10.4.8.%d", i+1)), AcquireOptions{Prefer: netip.MustParsePrefix(p)})
		if err != nil || !cfg.Contains(l.Subnet) {
			t.Errorf("Acquire(Prefer %s) = %v, %v", p, l, err)
		}
	}
}

// TestAcquireDeletesOwnLeaseOutsideNetwork: the node's lease from an older
// Network is deleted (as flanneld does); another node's is left alone.
func TestAcquireDeletesOwnLeaseOutsideNetwork(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, seedConfig)
	mine, theirs := netip.MustParsePrefix("10.99.1.0/24"), netip.MustParsePrefix("10.99.2.0/24")
	for p, v := range map[netip.Prefix]string{
		mine:   `{"PublicIP":"10.4.7.21","PublicIPv6":null,"BackendType":"host-gw"}`,
		theirs: `{"PublicIP":"10.4.7.22","PublicIPv6":null,"BackendType":"host-gw"}`,
	} {
		if _, err := s.cli.Put(ctx, SubnetKey(s.Prefix(), p), v); err != nil {
			t.Fatal(err)
		}
	}
	l, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{})
	if err != nil || !cfg.Contains(l.Subnet) {
		t.Fatalf("Acquire = %v, %v; want a subnet of %s", l, err, cfg.Network)
	}
	if _, err := s.Get(ctx, mine); !errors.Is(err, ErrNotFound) {
		t.Errorf("the node's lease outside the network: %v, want it deleted", err)
	}
	if _, err := s.Get(ctx, theirs); err != nil {
		t.Errorf("another node's lease outside the network: %v, want it kept", err)
	}
}

// TestAcquireReplacesOwnMisfit: after a SubnetLen change the node's old
// lease is deleted, its etcd lease revoked, and one fitting lease acquired;
// the old subnet no longer counts as held.
func TestAcquireReplacesOwnMisfit(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, seedConfig)
	old, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{TTL: time.Hour, Prefer: netip.MustParsePrefix("172.7.21.0/24")})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	cfg = putConfig(t, s, `{"Network":"172.7.0.0/16","SubnetLen":25}`)
	prefer := netip.MustParsePrefix("172.7.21.0/25")
	l, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{TTL: time.Hour, Prefer: prefer})
	if err != nil || l.Subnet != prefer {
		t.Fatalf("Acquire after SubnetLen 25 = %v, %v; want %s, free once the old /24 is gone", l, err, prefer)
	}
	all, _, err := s.List(ctx)
	if err != nil || len(all) != 1 || all[0].Subnet != prefer {
		t.Fatalf("List = %v, %v; want only %s", all, err, prefer)
	}
	if _, alive, err := s.expiration(ctx, old.EtcdLease); err != nil || alive {
		t.Errorf("the old lease's etcd lease: alive %v, %v; want it revoked", alive, err)
	}
}

// TestAcquireMisfitRewrittenIsKept: a misfit written since it was listed
// is not deleted; Acquire lists again.
func TestAcquireMisfitRewrittenIsKept(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, seedConfig)
	key := SubnetKey(s.Prefix(), netip.MustParsePrefix("10.99.1.0/24"))
	value := `{"PublicIP":"10.4.7.21","PublicIPv6":null,"BackendType":"host-gw"}`
	if _, err := s.cli.Put(ctx, key, value); err != nil {
		t.Fatal(err)
	}
	stale, _, err := s.list(ctx)
	if err != nil || len(stale) != 1 {
		t.Fatalf("list = %v, %v", stale, err)
	}
	if _, err := s.cli.Put(ctx, key, value); err != nil {
		t.Fatal(err)
	}
	a := &acquisition{s: s, cfg: cfg, attrs: hostGW("10.4.7.21")}
	if _, err := a.dropMisfits(ctx, stale); !errors.Is(err, errLostRace) {
		t.Fatalf("dropMisfits(stale listing) = %v, want errLostRace", err)
	}
	if resp, err := s.cli.Get(ctx, key); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("a key rewritten since it was listed was deleted: %v", err)
	}
}

// TestAcquireMisfitSharedEtcdLease: the misfit's etcd lease is not revoked
// while another key is bound to it.
func TestAcquireMisfitSharedEtcdLease(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, seedConfig)
	grant, err := s.cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	other := SubnetKey(s.Prefix(), netip.MustParsePrefix("172.7.30.0/24"))
	for key, v := range map[string]string{
		SubnetKey(s.Prefix(), netip.MustParsePrefix("172.7.20.0/23")): `{"PublicIP":"10.4.7.21","PublicIPv6":null,"BackendType":"host-gw"}`,
		other: `{"PublicIP":"10.4.7.30","PublicIPv6":null,"BackendType":"host-gw"}`,
	} {
		if _, err := s.cli.Put(ctx, key, v, clientv3.WithLease(grant.ID)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{}); err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if resp, err := s.cli.Get(ctx, other); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("another node's key on the same etcd lease is gone: %v", err)
	}
}

const threeSubnets = `{"Network":"10.10.0.0/22","SubnetLen":24,"SubnetMin":"10.10.1.0","SubnetMax":"10.10.3.0"}`

func TestReservationNeverGivenAway(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, threeSubnets)
	a, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{})
	if err != nil {
		t.Fatalf("Acquire A: %v", err)
	}
	for i, ip := range []string{"10.4.7.22", "10.4.7.23"} {
		l, err := s.Acquire(ctx, cfg, hostGW(ip), AcquireOptions{Prefer: a.Subnet, TTL: time.Hour})
		if err != nil {
			t.Fatalf("Acquire %d: %v", i, err)
		}
		if l.Subnet == a.Subnet {
			t.Fatalf("node %s was given A's reserved %s", ip, a.Subnet)
		}
	}
	_, err = s.Acquire(ctx, cfg, hostGW("10.4.7.24"), AcquireOptions{Prefer: a.Subnet})
	if !errors.Is(err, ErrNoFreeSubnet) || !strings.Contains(err.Error(), "10.10.0.0/22") || !strings.Contains(err.Error(), "3 subnets") {
		t.Fatalf("Acquire in a full network: %v, want ErrNoFreeSubnet naming the network and count", err)
	}
	got, err := s.Get(ctx, a.Subnet)
	if err != nil || got.Attrs.PublicIP != a.Attrs.PublicIP || got.ModRevision != a.ModRevision {
		t.Fatalf("A's reservation changed: %+v, %v", got, err)
	}
}

func TestAcquireRace(t *testing.T) {
	for _, tt := range []struct {
		name, config string
		n            int
	}{
		{"3", threeSubnets, 3},
		{"16", `{"Network":"10.20.0.0/16","SubnetLen":24,"SubnetMin":"10.20.16.0","SubnetMax":"10.20.31.0"}`, 16},
	} {
		t.Run(tt.name, func(t *testing.T) { testAcquireRace(t, tt.config, tt.n) })
	}
}

// testAcquireRace has n nodes, each with its own client, acquire at once in
// a network of exactly n subnets; then one more node finds it full.
func testAcquireRace(t *testing.T, config string, n int) {
	cfg := putConfig(t, newStore(t), config)
	ctx := testCtx(t)
	stores := make([]*Store, n+1)
	for i := range stores {
		stores[i] = newStore(t)
	}
	leases := make([]*Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			leases[i], errs[i] = stores[i].Acquire(ctx, cfg, hostGW(fmt.Sprintf("10.4.9.%d", i+1)), AcquireOptions{TTL: time.Hour})
		})
	}
	close(start)
	wg.Wait()
	seen := map[netip.Prefix]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		if j, dup := seen[leases[i].Subnet]; dup {
			t.Fatalf("nodes %d and %d both hold %s", j, i, leases[i].Subnet)
		}
		seen[leases[i].Subnet] = i
	}
	_, err := stores[n].Acquire(ctx, cfg, hostGW("10.4.9.250"), AcquireOptions{})
	if !errors.Is(err, ErrNoFreeSubnet) {
		t.Fatalf("node %d in a full network: %v, want ErrNoFreeSubnet", n, err)
	}
	all, _, err := stores[n].List(ctx)
	if err != nil || len(all) != n {
		t.Fatalf("List: %d leases, %v; want %d", len(all), err, n)
	}
}

// TestAcquireSameNodeConcurrently: a plugin and a daemon of one node
// acquiring at once end with one subnet between them.
func TestAcquireSameNodeConcurrently(t *testing.T) {
	cfg := putConfig(t, newStore(t), seedConfig)
	ctx := testCtx(t)
	const n = 6
	got := make([]*Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		s := newStore(t)
		wg.Go(func() {
			<-start
			got[i], errs[i] = s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{TTL: time.Hour})
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("acquirer %d: %v", i, errs[i])
		}
		if got[i].Subnet != got[0].Subnet {
			t.Errorf("acquirer %d got %s, acquirer 0 got %s", i, got[i].Subnet, got[0].Subnet)
		}
	}
	all, _, err := newStore(t).List(ctx)
	if err != nil || len(all) != 1 {
		t.Fatalf("List = %v, %v; want one lease", all, err)
	}
}

func TestAcquireTreatsDualStackKeyAsHeld(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, threeSubnets)
	// A flannel dual-stack node holds 10.10.1.0/24 and 10.10.2.0/24.
	for _, k := range []string{"10.10.1.0-24&fc00::-64", "10.10.2.0-24&fc00:0:0:1::-64"} {
		if _, err := s.cli.Put(ctx, s.Prefix()+"/subnets/"+k, `{"PublicIP":"10.4.7.50","PublicIPv6":"fc00::50","BackendType":"vxlan"}`); err != nil {
			t.Fatal(err)
		}
	}
	l, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{Prefer: netip.MustParsePrefix("10.10.1.0/24")})
	if err != nil || l.Subnet != netip.MustParsePrefix("10.10.3.0/24") {
		t.Fatalf("Acquire = %v, %v; want the one free subnet 10.10.3.0/24", l, err)
	}
}

func TestAcquireInvalid(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, seedConfig)
	if _, err := s.Acquire(ctx, nil, hostGW("10.4.7.21"), AcquireOptions{}); err == nil {
		t.Error("Acquire with no config succeeded")
	}
	if _, err := s.Acquire(ctx, cfg, Attrs{}, AcquireOptions{}); !errors.Is(err, ErrBadAttrs) {
		t.Errorf("Acquire with no PublicIP: %v, want ErrBadAttrs", err)
	}
	if _, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{TTL: -time.Second}); err == nil {
		t.Error("Acquire with a negative TTL succeeded")
	}
}

// TestAcquireKeepsFlannelFields: reusing a lease flanneld wrote for this
// node rewrites weft's part of it and keeps the IPv6 address and
// BackendV6Data that flannel peers decode.
func TestAcquireKeepsFlannelFields(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, seedConfig)
	key := s.Prefix() + "/subnets/172.7.21.0-24&fc00::-64"
	flannel := `{"PublicIP":"10.4.7.21","PublicIPv6":"fc00::21","BackendType":"vxlan",` +
		`"BackendData":{"VtepMAC":"0a:58:0a:f4:01:01","VNI":1},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:02"}}`
	if _, err := s.cli.Put(ctx, key, flannel); err != nil {
		t.Fatal(err)
	}
	ours := hostGW("10.4.7.21")
	ours.BackendType = "vxlan"
	ours.BackendData = []byte(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`)
	l, err := s.Acquire(ctx, cfg, ours, AcquireOptions{})
	if err != nil || l.Subnet != netip.MustParsePrefix("172.7.21.0/24") {
		t.Fatalf("Acquire = %v, %v; want the node's lease 172.7.21.0/24", l, err)
	}
	resp, err := s.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("reading %s: %v", key, err)
	}
	want := `{"PublicIP":"10.4.7.21","PublicIPv6":"fc00::21","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"},` +
		`"BackendV6Data":{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:02"}}`
	if got := string(resp.Kvs[0].Value); got != want {
		t.Errorf("rewritten value\n %s\nwant\n %s", got, want)
	}
	// Nothing left to change: no second write.
	again, err := s.Acquire(ctx, cfg, ours, AcquireOptions{})
	if err != nil || again.ModRevision != resp.Kvs[0].ModRevision {
		t.Errorf("Acquire again = %+v, %v; want the value at revision %d untouched", again, err, resp.Kvs[0].ModRevision)
	}
}

// TestAcquireUnreadableKeyIsHeld: a key whose name is a subnet but whose
// value does not decode (a hand-written reservation with a typo) is never
// offered nor overwritten, even when the node prefers its subnet, and a
// full network's error names it.
func TestAcquireUnreadableKeyIsHeld(t *testing.T) {
	var logs bytes.Buffer
	s := NewStore(newClient(t), testPrefix(t), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	ctx := testCtx(t)
	cfg := putConfig(t, s, threeSubnets)
	typo := netip.MustParsePrefix("10.10.1.0/24")
	key, value := SubnetKey(s.Prefix(), typo), `{"PublicIP":"10.4.7.99",`
	put, err := s.cli.Put(ctx, key, value)
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"10.4.7.21", "10.4.7.22"} {
		l, err := s.Acquire(ctx, cfg, hostGW(ip), AcquireOptions{Prefer: typo})
		if err != nil || l.Subnet == typo {
			t.Fatalf("Acquire(%s, Prefer %s) = %v, %v; want another subnet", ip, typo, l, err)
		}
	}
	if !strings.Contains(logs.String(), "held by a key whose value cannot be decoded") || !strings.Contains(logs.String(), key) {
		t.Errorf("no warning naming %s:\n%s", key, logs.String())
	}
	_, err = s.Acquire(ctx, cfg, hostGW("10.4.7.23"), AcquireOptions{})
	if !errors.Is(err, ErrNoFreeSubnet) || !strings.Contains(err.Error(), key) {
		t.Fatalf("Acquire with every subnet held = %v, want ErrNoFreeSubnet naming %s", err, key)
	}
	resp, err := s.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != value || resp.Kvs[0].ModRevision != put.Header.Revision {
		t.Fatalf("the unreadable key was changed: %v, %v", resp, err)
	}
}

// TestAcquirableAgreesWithAcquire: the dry run STATUS relies on counts held
// subnets as Acquire does: a key that does not decode and another node's key
// of another length hold theirs, and the node's own key outside the network
// (which Acquire deletes) is not a lease it can use.
func TestAcquirableAgreesWithAcquire(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, threeSubnets)
	for p, v := range map[string]string{
		"10.10.1.0/24": `{"PublicIP":"10.4.7.99",`,                         // unreadable
		"10.10.2.0/25": `{"PublicIP":"10.4.7.22","BackendType":"host-gw"}`, // another length
		"10.99.0.0/24": `{"PublicIP":"10.4.7.21","BackendType":"host-gw"}`, // node21's, outside the network
	} {
		if _, err := s.cli.Put(ctx, SubnetKey(s.Prefix(), netip.MustParsePrefix(p)), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Acquirable(ctx, cfg, netip.MustParseAddr("10.4.7.21")); err != nil {
		t.Fatalf("Acquirable with 10.10.3.0/24 free = %v, want nil", err)
	}
	if _, err := s.Acquire(ctx, cfg, hostGW("10.4.7.23"), AcquireOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"10.4.7.21", "10.4.7.24"} {
		err := s.Acquirable(ctx, cfg, netip.MustParseAddr(ip))
		if !errors.Is(err, ErrNoFreeSubnet) {
			t.Errorf("Acquirable(%s) with every subnet held = %v, want ErrNoFreeSubnet", ip, err)
		}
		if _, aerr := s.Acquire(ctx, cfg, hostGW(ip), AcquireOptions{}); !errors.Is(aerr, ErrNoFreeSubnet) {
			t.Errorf("Acquire(%s) = %v, want ErrNoFreeSubnet as Acquirable said", ip, aerr)
		}
	}
	if err := s.Acquirable(ctx, cfg, netip.MustParseAddr("10.4.7.23")); err != nil {
		t.Errorf("Acquirable for the node holding 10.10.3.0/24 = %v, want nil", err)
	}
}
