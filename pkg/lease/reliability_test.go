package lease

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestAcquireRace100: 100 nodes, each with its own client, acquire at once in
// a network with room for exactly 100 subnets: all succeed, all distinct,
// and a 101st node finds the network full (docs/reliability.md).
func TestAcquireRace100(t *testing.T) {
	start := time.Now()
	testAcquireRace(t, `{"Network":"10.30.0.0/16","SubnetLen":24,"SubnetMin":"10.30.1.0","SubnetMax":"10.30.100.0"}`, 100)
	t.Logf("100 nodes acquired 100 distinct subnets in %s", time.Since(start).Round(time.Millisecond))
}

// TestNoOverwriteOfAnotherNodesLease: whatever another node asks for (the
// subnet as its preferred one, a reacquire with the same subnet, a release
// of a stale copy), the holder's key keeps its value and revision.
func TestNoOverwriteOfAnotherNodesLease(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, `{"Network":"10.31.0.0/16","SubnetLen":24,"SubnetMin":"10.31.1.0","SubnetMax":"10.31.2.0"}`)
	a, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{TTL: time.Hour})
	if err != nil {
		t.Fatalf("node A: %v", err)
	}
	// B prefers A's subnet: it must get the other one.
	b, err := newStore(t).Acquire(ctx, cfg, hostGW("10.4.7.22"), AcquireOptions{TTL: time.Hour, Prefer: a.Subnet})
	if err != nil {
		t.Fatalf("node B: %v", err)
	}
	if b.Subnet == a.Subnet {
		t.Fatalf("node B was given node A's subnet %s", a.Subnet)
	}
	// C finds the network full rather than taking A's or B's subnet.
	if _, err := newStore(t).Acquire(ctx, cfg, hostGW("10.4.7.23"), AcquireOptions{Prefer: a.Subnet}); err == nil {
		t.Fatal("node C got a subnet from a full network")
	}
	// Many concurrent attempts by other nodes on A's subnet.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			newStore(t).Acquire(ctx, cfg, hostGW(fmt.Sprintf("10.4.8.%d", i+1)), AcquireOptions{Prefer: a.Subnet})
		})
	}
	wg.Wait()
	// A stale copy of A's lease (as another writer would hold after A rewrote
	// it) cannot delete it.
	stale := *a
	changed := Attrs{PublicIP: a.Attrs.PublicIP, BackendType: "vxlan", BackendData: []byte(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}`)}
	cur, err := s.Acquire(ctx, cfg, changed, AcquireOptions{TTL: time.Hour})
	if err != nil || cur.Subnet != a.Subnet {
		t.Fatalf("node A reacquire: %v, %v", cur, err)
	}
	if err := newStore(t).Release(ctx, &stale); err == nil {
		t.Fatal("a stale lease released node A's key")
	}
	got, err := s.Get(ctx, a.Subnet)
	if err != nil {
		t.Fatalf("node A's lease is gone: %v", err)
	}
	if got.Attrs.PublicIP != netip.MustParseAddr("10.4.7.21") || got.ModRevision != cur.ModRevision {
		t.Fatalf("node A's lease was rewritten by another node: %+v, want revision %d", got, cur.ModRevision)
	}
}
