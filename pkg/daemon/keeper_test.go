package daemon

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/metrics"
	"github.com/weft-cni/weft/pkg/netconf"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

const selfIP = "10.4.7.21"

type keeperRig struct {
	k      *keeper
	store  *fakeStore
	clock  *clockwork.FakeClock
	leases chan lease.Lease
	renews chan time.Time
	ctx    context.Context
}

// startKeeper runs a keeper for selfIP against store until the test ends.
func startKeeper(t *testing.T, store *fakeStore, prefer netip.Prefix) *keeperRig {
	t.Helper()
	r := &keeperRig{store: store, clock: clockwork.NewFakeClock(),
		leases: make(chan lease.Lease, 16), renews: make(chan time.Time, 16)}
	r.k = &keeper{store: store, clock: r.clock, log: discard, metrics: metrics.New(),
		publicIP: ip(selfIP), ttl: DefaultLeaseTTL, prefer: prefer, preferNetwork: store.network.Network,
		lost:    make(chan struct{}, 1),
		onLease: func(_ *netconf.Config, l *lease.Lease) { r.leases <- *l },
		onRenew: func(t time.Time) { r.renews <- t }}
	ctx, cancel := context.WithCancel(context.Background())
	r.ctx = ctx
	var wg sync.WaitGroup
	wg.Go(func() { r.k.run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return r
}

// next waits for the next lease the keeper reports.
func (r *keeperRig) next(t *testing.T) lease.Lease {
	t.Helper()
	select {
	case l := <-r.leases:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a lease")
		return lease.Lease{}
	}
}

// nextRetrying waits for the next lease, letting every retry's backoff pass.
func (r *keeperRig) nextRetrying(t *testing.T) lease.Lease {
	t.Helper()
	var l lease.Lease
	eventually(t, "a lease", func() bool {
		select {
		case l = <-r.leases:
			return true
		default:
			return false
		}
	}, func() { r.clock.Advance(maxBackoff * 2) })
	return l
}

// waitRetry waits until the keeper sleeps on its backoff, then lets it retry.
func (r *keeperRig) waitRetry(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	if err := r.clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("keeper never waited to retry: %v", err)
	}
	r.clock.Advance(maxBackoff * 2)
}

func TestKeeperAcquiresAndKeepsAlive(t *testing.T) {
	store := newFakeStore(t, "172.7.0.0/16")
	r := startKeeper(t, store, netip.Prefix{})
	l := r.next(t)
	if l.Reservation() || l.Attrs.PublicIP != ip(selfIP) || l.Attrs.BackendType != "host-gw" {
		t.Fatalf("lease = %+v, want a TTL lease for %s", l, selfIP)
	}
	eventually(t, "a keep-alive stream", func() bool { return store.keepAlives() == 1 }, nil)
	for i := range 3 {
		exp := time.Unix(int64(1e9+i), 0)
		if !store.renew(l.EtcdLease, exp) {
			t.Fatal("no keep-alive stream for the lease")
		}
		if got := <-r.renews; !got.Equal(exp) {
			t.Errorf("renewal %d: expiry %v, want %v", i, got, exp)
		}
	}
	if acquires, _ := store.counts(); acquires != 1 {
		t.Errorf("%d acquisitions for one lease and three renewals, want 1 (renewal is keep-alive, not a new grant)", acquires)
	}
}

func TestKeeperRetriesWhileEtcdDown(t *testing.T) {
	store := newFakeStore(t, "172.7.0.0/16")
	store.setDown(true)
	r := startKeeper(t, store, netip.Prefix{})
	for range 3 {
		r.waitRetry(t)
	}
	select {
	case l := <-r.leases:
		t.Fatalf("got lease %v while etcd is down", l.Subnet)
	default:
	}
	if n := metricValue(t, r.k.metrics.Registry(), "weft_reconcile_errors_total", "kind", "lease"); n < 3 {
		t.Errorf("lease errors = %v, want at least 3", n)
	}
	store.setDown(false)
	if l := r.nextRetrying(t); !l.Subnet.IsValid() {
		t.Fatalf("lease = %+v", l)
	}
}

func TestKeeperReacquiresSameSubnetAfterExpiry(t *testing.T) {
	store := newFakeStore(t, "172.7.0.0/16")
	r := startKeeper(t, store, netip.Prefix{})
	first := r.next(t)
	eventually(t, "a keep-alive stream", func() bool { return store.keepAlives() == 1 }, nil)

	// etcd goes away, the lease expires meanwhile; nobody takes the subnet.
	store.setDown(true)
	store.expire(first.EtcdLease)
	r.waitRetry(t)
	store.put(pfx("172.7.99.0/24"), "10.4.7.99", 0) // another node joins meanwhile
	store.setDown(false)
	second := r.nextRetrying(t)
	if second.Subnet != first.Subnet {
		t.Errorf("re-acquired %v, want the same subnet %v", second.Subnet, first.Subnet)
	}
	if second.EtcdLease == first.EtcdLease || second.Reservation() {
		t.Errorf("re-acquired lease bound to etcd lease %x, want a new one", int64(second.EtcdLease))
	}
}

func TestKeeperNewSubnetWhenTakenWhileAway(t *testing.T) {
	store := newFakeStore(t, "172.7.0.0/16")
	r := startKeeper(t, store, netip.Prefix{})
	first := r.next(t)
	store.setDown(true)
	store.expire(first.EtcdLease)
	r.waitRetry(t)
	store.put(first.Subnet, "10.4.7.99", 0)
	store.setDown(false)
	if second := r.nextRetrying(t); second.Subnet == first.Subnet {
		t.Errorf("re-acquired %v, which another node holds now", second.Subnet)
	}
}

func TestKeeperLostKey(t *testing.T) {
	store := newFakeStore(t, "172.7.0.0/16")
	r := startKeeper(t, store, netip.Prefix{})
	first := r.next(t)
	store.del(first.Subnet)          // an operator deletes the key; the etcd lease lives on
	r.k.signalLost(store.revision()) // as the syncer does when it sees the deletion
	second := r.next(t)
	if second.Subnet != first.Subnet {
		t.Errorf("re-acquired %v, want %v", second.Subnet, first.Subnet)
	}
	if _, ok := store.get(first.Subnet); !ok {
		t.Error("key not written again")
	}
}

func TestKeeperHonoursReservation(t *testing.T) {
	store := newFakeStore(t, "172.7.0.0/16")
	store.put(pfx("172.7.21.0/24"), selfIP, 0)
	r := startKeeper(t, store, netip.Prefix{})
	l := r.next(t)
	if !l.Reservation() || l.Subnet != pfx("172.7.21.0/24") {
		t.Fatalf("lease = %+v, want the reservation", l)
	}
	r.k.signalLost(store.revision()) // ends the hold; the keeper acquires again
	if l := r.next(t); !l.Reservation() {
		t.Fatalf("second lease = %+v, want the reservation again", l)
	}
	if n := store.keepAlives(); n != 0 {
		t.Errorf("%d keep-alive streams for a reservation, want 0", n)
	}
}

// TestKeeperPrefersItsSubnet: the subnet file's subnet is reused when free
// and never taken from another node.
func TestKeeperPrefersItsSubnet(t *testing.T) {
	s21 := pfx("172.7.21.0/24")
	tests := []struct {
		name  string
		setup func(*fakeStore)
		want  netip.Prefix
		other string // who holds 172.7.21.0/24 afterwards
	}{
		{name: "leased to another address (this node's former, or a node that got it since): left alone",
			setup: func(f *fakeStore) { f.put(s21, "10.4.7.121", 7) },
			other: "10.4.7.121"},
		{name: "node already holds a lease by its address: left alone",
			setup: func(f *fakeStore) { f.put(s21, "10.4.7.121", 7); f.put(pfx("172.7.30.0/24"), selfIP, 8) },
			want:  pfx("172.7.30.0/24"), other: "10.4.7.121"},
		{name: "reservation of another node: left alone",
			setup: func(f *fakeStore) { f.put(s21, "10.4.7.121", 0) },
			other: "10.4.7.121"},
		{name: "free: created",
			setup: func(*fakeStore) {}, want: s21, other: selfIP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newFakeStore(t, "172.7.0.0/16")
			tt.setup(store)
			r := startKeeper(t, store, s21)
			l := r.next(t)
			if tt.want.IsValid() && l.Subnet != tt.want {
				t.Errorf("lease %v, want %v", l.Subnet, tt.want)
			}
			if !tt.want.IsValid() && l.Subnet == s21 {
				t.Errorf("took %v", s21)
			}
			if got, _ := store.get(s21); got.Attrs.PublicIP != ip(tt.other) {
				t.Errorf("%v held by %v, want %v", s21, got.Attrs.PublicIP, tt.other)
			}
		})
	}
}

func TestKeeperUnsupportedBackend(t *testing.T) {
	store := newFakeStore(t, "172.7.0.0/16")
	hostgw := store.network
	other := *hostgw // a backend weft does not parse; say a newer config's
	other.Backend.Type = "wireguard"
	store.network = &other
	r := startKeeper(t, store, netip.Prefix{})
	r.waitRetry(t)
	if acquires, _ := store.counts(); acquires != 0 {
		t.Fatalf("acquired %d times for an unsupported backend", acquires)
	}
	store.setNetwork(hostgw)
	r.nextRetrying(t)
}

// TestKeeperIgnoresLossSeenBeforeReacquiring: after a partition longer than
// the TTL, the keep-alive ends and the keeper acquires again; the watch (or
// a re-list) reports the old key's deletion meanwhile. That news is about
// the lease already given up: it must not make the keeper drop the lease it
// just acquired and acquire a third time (a spurious "key vanished"
// warning, a not-ready flap and a second lease event).
func TestKeeperIgnoresLossSeenBeforeReacquiring(t *testing.T) {
	store := newFakeStore(t, "172.7.0.0/16")
	r := startKeeper(t, store, netip.Prefix{})
	first := r.next(t)
	eventually(t, "a keep-alive stream", func() bool { return store.keepAlives() == 1 }, nil)

	store.setDown(true)
	store.expire(first.EtcdLease) // key deleted, keep-alive ended
	r.waitRetry(t)
	r.k.signalLost(store.revision()) // the syncer saw the deletion
	store.setDown(false)
	second := r.nextRetrying(t)

	exp := time.Unix(2e9, 0)
	eventually(t, "the keeper holding its lease", func() bool { return store.tryRenew(second.EtcdLease, exp) }, nil)
	if got := <-r.renews; !got.Equal(exp) {
		t.Fatalf("renewal %v, want %v", got, exp)
	}
	select {
	case l := <-r.leases:
		t.Errorf("lease %v acquired again after %v: the old key's deletion was taken for the new one's", l.Subnet, second.Subnet)
	default:
	}
	if acquires, _ := store.counts(); acquires != 2 {
		t.Errorf("%d acquisitions, want 2 (the first and one after the expiry)", acquires)
	}
}
