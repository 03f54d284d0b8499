package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/netconf"
)

var errDown = errors.New("etcd unreachable (fake)")

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

// eventually polls cond until it holds or a deadline passes; tick, if not
// nil, runs between polls (typically advancing a fake clock).
func eventually(t *testing.T, what string, cond func() bool, tick func()) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		if tick != nil {
			tick()
		}
		time.Sleep(time.Millisecond) // yield between polls; the deadline bounds the wait
	}
}

// fakeStore is an in-memory etcd lease store with revisions, a watchable
// event log, keep-alive streams the test drives, and an outage switch.
type fakeStore struct {
	mu       sync.Mutex
	network  *netconf.Config
	keys     map[netip.Prefix]*lease.Lease
	rev      int64
	log      []lease.Event // every change, in revision order
	compact  int64         // events at or below this revision are gone
	changed  chan struct{} // closed and replaced on every change
	down     bool
	nextID   clientv3.LeaseID
	alive    map[clientv3.LeaseID]bool
	kas      map[clientv3.LeaseID]chan time.Time // open keep-alive streams
	acquires int
	lists    int
	watchErr error // makes an open or new watch fail, once
	paused   bool  // watches deliver nothing, as when disconnected
}

var _ Store = (*fakeStore)(nil)

func newFakeStore(t *testing.T, network string) *fakeStore {
	t.Helper()
	cfg, err := netconf.Parse([]byte(`{"Network":"` + network + `","Backend":{"Type":"host-gw"}}`))
	if err != nil {
		t.Fatal(err)
	}
	return &fakeStore{network: cfg, keys: map[netip.Prefix]*lease.Lease{}, changed: make(chan struct{}),
		nextID: 100, alive: map[clientv3.LeaseID]bool{}, kas: map[clientv3.LeaseID]chan time.Time{}}
}

// parseNetwork parses a network config a test writes; a typo panics.
func parseNetwork(raw string) *netconf.Config {
	cfg, err := netconf.Parse([]byte(raw))
	if err != nil {
		panic(err)
	}
	return cfg
}

// setNetwork replaces the network config in etcd.
func (f *fakeStore) setNetwork(cfg *netconf.Config) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.network = cfg
}

func (f *fakeStore) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
	f.notifyLocked()
}

func (f *fakeStore) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// put writes a key as another node (or an operator) would.
func (f *fakeStore) put(subnet netip.Prefix, publicIP string, id clientv3.LeaseID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id != 0 {
		f.alive[id] = true
	}
	f.putLocked(subnet, lease.Attrs{PublicIP: ip(publicIP), BackendType: "host-gw"}, id)
}

func (f *fakeStore) putLocked(subnet netip.Prefix, attrs lease.Attrs, id clientv3.LeaseID) *lease.Lease {
	f.rev++
	l := &lease.Lease{Subnet: subnet, Attrs: attrs, EtcdLease: id, ModRevision: f.rev}
	if id != 0 {
		l.Expiration = time.Now().Add(DefaultLeaseTTL)
	}
	f.keys[subnet] = l
	f.log = append(f.log, lease.Event{Type: lease.Added, Lease: *l})
	f.notifyLocked()
	return l
}

// del deletes a key, as an operator or an expiry would.
func (f *fakeStore) del(subnet netip.Prefix) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delLocked(subnet)
}

func (f *fakeStore) delLocked(subnet netip.Prefix) {
	old, ok := f.keys[subnet]
	if !ok {
		return
	}
	delete(f.keys, subnet)
	f.rev++
	ev := lease.Event{Type: lease.Removed, Lease: *old}
	ev.Lease.ModRevision = f.rev
	f.log = append(f.log, ev)
	f.notifyLocked()
}

// expire ends etcd lease id: its keys go and its keep-alive streams close.
func (f *fakeStore) expire(id clientv3.LeaseID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.alive, id)
	for subnet, l := range f.keys {
		if l.EtcdLease == id {
			f.delLocked(subnet)
		}
	}
	if ch, ok := f.kas[id]; ok {
		close(ch)
		delete(f.kas, id)
	}
}

// renew sends a keep-alive response on id's stream; false when none is open.
func (f *fakeStore) renew(id clientv3.LeaseID, exp time.Time) bool {
	f.mu.Lock()
	ch, ok := f.kas[id]
	f.mu.Unlock()
	if ok {
		ch <- exp
	}
	return ok
}

func (f *fakeStore) keepAlives() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.kas)
}

func (f *fakeStore) get(subnet netip.Prefix) (lease.Lease, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.keys[subnet]
	if !ok {
		return lease.Lease{}, false
	}
	return *l, true
}

// pauseWatches makes watches deliver nothing until compactAll.
func (f *fakeStore) pauseWatches() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paused = true
}

// compactAll compacts the log: a watch from an older revision, and the
// open watch, fail with ErrCompacted.
func (f *fakeStore) compactAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.compact, f.paused = f.rev, false
	f.watchErr = fmt.Errorf("fake: %w", lease.ErrCompacted)
	f.notifyLocked()
}

func (f *fakeStore) counts() (acquires, lists int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acquires, f.lists
}

func (f *fakeStore) NetworkConfig(context.Context) (*netconf.Config, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDown
	}
	return f.network, nil
}

// FillExpiration is a no-op: the fake's leases carry their expiry.
func (f *fakeStore) FillExpiration(context.Context, *lease.Lease) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errDown
	}
	return nil
}

func (f *fakeStore) ListWithoutExpiry(context.Context) ([]lease.Lease, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, 0, errDown
	}
	f.lists++
	out := make([]lease.Lease, 0, len(f.keys))
	for _, l := range f.keys {
		out = append(out, *l)
	}
	slices.SortFunc(out, func(a, b lease.Lease) int { return a.Subnet.Addr().Compare(b.Subnet.Addr()) })
	return out, f.rev, nil
}

// Acquire follows lease.Store.Acquire: own key by public IP, else prefer if
// free, else the first free subnet; a new key gets a new etcd lease.
func (f *fakeStore) Acquire(_ context.Context, cfg *netconf.Config, attrs lease.Attrs, opt lease.AcquireOptions) (*lease.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDown
	}
	f.acquires++
	for _, l := range f.keys {
		if l.Attrs.PublicIP == attrs.PublicIP {
			out := *l
			return &out, nil
		}
	}
	subnet := opt.Prefer
	if _, held := f.keys[subnet]; !subnet.IsValid() || held {
		subnet = netip.Prefix{}
		for p := range cfg.Subnets() {
			if _, held := f.keys[p]; !held {
				subnet = p
				break
			}
		}
	}
	if !subnet.IsValid() {
		return nil, lease.ErrNoFreeSubnet
	}
	var id clientv3.LeaseID
	if opt.TTL > 0 {
		f.nextID++
		id = f.nextID
		f.alive[id] = true
	}
	out := *f.putLocked(subnet, attrs, id)
	return &out, nil
}

func (f *fakeStore) KeepAlive(ctx context.Context, id clientv3.LeaseID, _ time.Time) (<-chan time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDown
	}
	ch := make(chan time.Time)
	if !f.alive[id] {
		close(ch)
		return ch, nil
	}
	f.kas[id] = ch
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.kas[id] == ch {
			close(ch)
			delete(f.kas, id)
		}
	}()
	return ch, nil
}

func (f *fakeStore) Watch(ctx context.Context, from int64, fn func([]lease.Event)) error {
	next := from
	for {
		f.mu.Lock()
		if f.down {
			f.mu.Unlock()
			return errDown
		}
		if err := f.watchErr; err != nil {
			f.watchErr = nil
			f.mu.Unlock()
			return err
		}
		if from < f.compact {
			f.mu.Unlock()
			return fmt.Errorf("fake: %w", lease.ErrCompacted)
		}
		var batch []lease.Event
		for _, ev := range f.log {
			if ev.Lease.ModRevision > next && !f.paused {
				batch = append(batch, ev)
			}
		}
		changed := f.changed
		f.mu.Unlock()
		if len(batch) > 0 {
			next = batch[len(batch)-1].Lease.ModRevision
			fn(batch)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// revision is the store's current revision.
func (f *fakeStore) revision() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rev
}

// tryRenew sends a keep-alive response on id's stream only if the keeper
// is waiting for one right now; false otherwise (never blocks, never sends
// on a stream being closed).
func (f *fakeStore) tryRenew(id clientv3.LeaseID, exp time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, ok := f.kas[id]
	if !ok {
		return false
	}
	select {
	case ch <- exp:
		return true
	default:
		return false
	}
}
