package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-iptables/iptables"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/masq"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/route"
	"github.com/weft-cni/weft/pkg/subnetfile"
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
	watchErr error // makes open and new watches fail once
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
		l.Expiration = time.Now().Add(time.Hour)
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

// compactAll compacts the log and breaks open watches with ErrCompacted.
func (f *fakeStore) compactAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.compact = f.rev
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

func (f *fakeStore) List(context.Context) ([]lease.Lease, int64, error) {
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

func (f *fakeStore) TakeOver(_ context.Context, subnet netip.Prefix, attrs lease.Attrs) (netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return netip.Addr{}, errDown
	}
	l, ok := f.keys[subnet]
	if !ok || l.Reservation() || l.Attrs.PublicIP == attrs.PublicIP {
		return netip.Addr{}, lease.ErrNotFound
	}
	old := l.Attrs.PublicIP
	f.putLocked(subnet, attrs, l.EtcdLease)
	return old, nil
}

func (f *fakeStore) KeepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan time.Time, error) {
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
			if ev.Lease.ModRevision > next {
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

// fakeRoutes is an in-memory route table.
type fakeRoutes struct {
	mu     sync.Mutex
	routes map[netip.Prefix]route.Route
}

var _ route.Programmer = (*fakeRoutes)(nil)

func newFakeRoutes(rs ...route.Route) *fakeRoutes {
	f := &fakeRoutes{routes: map[netip.Prefix]route.Route{}}
	for _, r := range rs {
		f.routes[r.Dst] = r
	}
	return f
}

func (f *fakeRoutes) List(network netip.Prefix) ([]route.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []route.Route
	for _, r := range f.routes {
		if network.Contains(r.Dst.Addr()) {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeRoutes) Replace(r route.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[r.Dst] = r
	return nil
}

func (f *fakeRoutes) Delete(r route.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.routes, r.Dst)
	return nil
}

// gateway returns the gateway of the route to dst, or the zero address.
func (f *fakeRoutes) gateway(dst string) netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.routes[pfx(dst)].Gateway
}

func (f *fakeRoutes) has(dst string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.routes[pfx(dst)]
	return ok
}

// fakeIPT is an in-memory iptables holding rule specs in iptables -S form.
type fakeIPT struct {
	mu      sync.Mutex
	chains  map[string][][]string // "table/chain" -> rules
	failAll error
}

var _ masq.IPTables = (*fakeIPT)(nil)

func newFakeIPT() *fakeIPT {
	f := &fakeIPT{chains: map[string][][]string{}}
	for _, c := range []string{"nat/PREROUTING", "nat/INPUT", "nat/OUTPUT", "nat/POSTROUTING", "filter/INPUT", "filter/FORWARD", "filter/OUTPUT"} {
		f.chains[c] = nil
	}
	return f
}

func (f *fakeIPT) Proto() iptables.Protocol { return iptables.ProtocolIPv4 }
func (f *fakeIPT) HasRandomFully() bool     { return true }

func (f *fakeIPT) ChainExists(table, chain string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failAll != nil {
		return false, f.failAll
	}
	_, ok := f.chains[table+"/"+chain]
	return ok, nil
}

func (f *fakeIPT) NewChain(table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.chains[table+"/"+chain]; ok {
		return fmt.Errorf("chain %s exists", chain)
	}
	f.chains[table+"/"+chain] = nil
	return nil
}

func (f *fakeIPT) ClearAndDeleteChain(table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.chains, table+"/"+chain)
	return nil
}

func (f *fakeIPT) List(table, chain string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failAll != nil {
		return nil, f.failAll
	}
	rules, ok := f.chains[table+"/"+chain]
	if !ok {
		return nil, fmt.Errorf("no chain %s", chain)
	}
	out := []string{"-N " + chain}
	for _, spec := range rules {
		out = append(out, "-A "+chain+" "+renderSpec(spec))
	}
	return out, nil
}

func (f *fakeIPT) ListById(table, chain string, id int) (string, error) {
	lines, err := f.List(table, chain)
	if err != nil {
		return "", err
	}
	if id >= len(lines) {
		return "", nil
	}
	return lines[id], nil
}

func (f *fakeIPT) Insert(table, chain string, pos int, spec ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := table + "/" + chain
	rules, ok := f.chains[key]
	if !ok || pos < 1 || pos > len(rules)+1 {
		return fmt.Errorf("bad insert at %d into %s", pos, key)
	}
	f.chains[key] = slices.Insert(rules, pos-1, slices.Clone(spec))
	return nil
}

func (f *fakeIPT) Delete(table, chain string, spec ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := table + "/" + chain
	i := slices.IndexFunc(f.chains[key], func(r []string) bool { return slices.Equal(r, spec) })
	if i < 0 {
		return fmt.Errorf("no such rule in %s", key)
	}
	f.chains[key] = slices.Delete(f.chains[key], i, i+1)
	return nil
}

func (f *fakeIPT) DeleteById(table, chain string, id int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := table + "/" + chain
	if id < 1 || id > len(f.chains[key]) {
		return fmt.Errorf("no rule %d in %s", id, key)
	}
	f.chains[key] = slices.Delete(f.chains[key], id-1, id)
	return nil
}

// rules returns a copy of a chain's rules, rendered.
func (f *fakeIPT) rules(table, chain string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, spec := range f.chains[table+"/"+chain] {
		out = append(out, renderSpec(spec))
	}
	return out
}

func (f *fakeIPT) insertRaw(table, chain string, pos int, spec ...string) {
	if err := f.Insert(table, chain, pos, spec...); err != nil {
		panic(err)
	}
}

func renderSpec(spec []string) string {
	words := make([]string, len(spec))
	for i, w := range spec {
		if strings.ContainsAny(w, " \"") {
			w = strconv.Quote(w)
		}
		words[i] = w
	}
	return strings.Join(words, " ")
}

// fakeNode records what the daemon asks of the host.
type fakeNode struct {
	mu        sync.Mutex
	ensured   []netip.Prefix
	marked    []netip.Prefix
	fileAtMark []bool // whether the subnet file existed at each mark
	path      string
	err       error
}

var _ Node = (*fakeNode)(nil)

func (n *fakeNode) Ensure(file *subnetfile.File) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ensured = append(n.ensured, file.Lease())
	return n.err
}

func (n *fakeNode) MarkReady(file *subnetfile.File, _ time.Time) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, err := os.Stat(n.path)
	n.fileAtMark = append(n.fileAtMark, err == nil)
	n.marked = append(n.marked, file.Lease())
	return nil
}

func (n *fakeNode) marks() ([]netip.Prefix, []bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.marked), slices.Clone(n.fileAtMark)
}
