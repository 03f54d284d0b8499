package ipam

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
)

// fakeStore is an in-memory Store. It hands out and takes in copies, so a
// Pool that keeps a reference to a State it saved is caught, and it checks
// Load and Save happen under the lock.
type fakeStore struct {
	mu sync.Mutex // the lock Lock takes

	// guarded by mu, between Lock and Unlock
	locked    bool
	st        State
	loadErr   error
	saveErr   error
	unlockErr error
	locks     int
	saves     int
}

var _ Store = (*fakeStore)(nil)

func newFakeStore() *fakeStore { return &fakeStore{st: *NewState()} }

func cloneState(st *State) *State {
	return &State{Last: st.Last, Entries: maps.Clone(st.Entries)}
}

func (f *fakeStore) Lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	f.locked = true
	f.locks++
	return nil
}

func (f *fakeStore) Unlock() error {
	if !f.locked {
		return ErrNotLocked
	}
	f.locked = false
	err := f.unlockErr
	f.mu.Unlock()
	return err
}

func (f *fakeStore) Load() (*State, error) {
	if !f.locked {
		return nil, ErrNotLocked
	}
	if f.loadErr != nil {
		return nil, f.loadErr
	}
	return cloneState(&f.st), nil
}

func (f *fakeStore) Save(st *State) error {
	if !f.locked {
		return ErrNotLocked
	}
	if f.saveErr != nil {
		return f.saveErr
	}
	f.saves++
	f.st = *cloneState(st)
	return nil
}

func (f *fakeStore) Close() error { return nil }

var (
	subnet24 = netip.MustParsePrefix("172.7.21.0/24")
	podA     = Attachment{"aaaa", "eth0"}
	podB     = Attachment{"bbbb", "eth0"}
	podC     = Attachment{"cccc", "eth0"}
)

func mustAllocate(t testing.TB, p *Pool, a Attachment) netip.Addr {
	t.Helper()
	ip, err := p.Allocate(context.Background(), a)
	if err != nil {
		t.Fatalf("Allocate(%v): %v", a, err)
	}
	return ip
}

func mustList(t testing.TB, p *Pool) map[Attachment]netip.Addr {
	t.Helper()
	m, err := p.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return m
}

func TestPoolAllocateIdempotent(t *testing.T) {
	f := newFakeStore()
	p := NewPool(f, subnet24)
	a1 := mustAllocate(t, p, podA)
	if a1 != netip.MustParseAddr("172.7.21.2") {
		t.Fatalf("first address %s, want 172.7.21.2", a1)
	}
	if again := mustAllocate(t, p, podA); again != a1 {
		t.Fatalf("second Allocate for the same attachment gave %s, want %s", again, a1)
	}
	if f.saves != 1 {
		t.Errorf("saves = %d, want 1 (repeat must not write)", f.saves)
	}
	eth1 := mustAllocate(t, p, Attachment{podA.ContainerID, "eth1"})
	b := mustAllocate(t, p, podB)
	if got := []netip.Addr{a1, eth1, b}; len(got) != len(slicesCompact(got)) {
		t.Fatalf("addresses not distinct: %v", got)
	}
	ip, ok, err := p.Lookup(context.Background(), podB)
	if err != nil || !ok || ip != b {
		t.Fatalf("Lookup(podB) = %v, %v, %v; want %v", ip, ok, err, b)
	}
}

func slicesCompact(ips []netip.Addr) []netip.Addr {
	s := slices.Clone(ips)
	slices.SortFunc(s, netip.Addr.Compare)
	return slices.Compact(s)
}

func TestPoolReleaseRoundRobin(t *testing.T) {
	f := newFakeStore()
	p := NewPool(f, subnet24)
	ctx := context.Background()
	a := mustAllocate(t, p, podA)
	if err := p.Release(ctx, podA); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if b := mustAllocate(t, p, podB); b == a {
		t.Fatalf("just-released %s reused at once", a)
	}
	if _, ok, _ := p.Lookup(ctx, podA); ok {
		t.Fatal("released attachment still found")
	}
	saves := f.saves
	if err := p.Release(ctx, podC); err != nil {
		t.Fatalf("Release of unknown attachment: %v", err)
	}
	if err := p.Release(ctx, podA); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if f.saves != saves {
		t.Errorf("Release of unknown attachments wrote the store")
	}
}

func TestPoolExhausted(t *testing.T) {
	f := newFakeStore()
	p := NewPool(f, netip.MustParsePrefix("172.7.21.0/28"))
	for i := range 13 {
		ip := mustAllocate(t, p, Attachment{"c" + string(rune('a'+i)), "eth0"})
		if ip == p.Gateway() || ip == netip.MustParseAddr("172.7.21.15") {
			t.Fatalf("handed out reserved address %s", ip)
		}
	}
	saves := f.saves
	_, err := p.Allocate(context.Background(), podA)
	want := "no free address in 172.7.21.0/28: 13 of 13 in use"
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Allocate on a full /28 = %v, want error containing %q wrapping ErrExhausted", err, want)
	}
	if f.saves != saves || len(f.st.Entries) != 13 {
		t.Errorf("failed Allocate changed the store")
	}
}

func TestPoolGC(t *testing.T) {
	p := NewPool(newFakeStore(), subnet24)
	ctx := context.Background()
	a, b, c := mustAllocate(t, p, podA), mustAllocate(t, p, podB), mustAllocate(t, p, podC)
	released, _, err := p.GC(ctx, []Attachment{podB, {"gone", "eth0"}})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	if !slices.Equal(released, []netip.Addr{a, c}) {
		t.Fatalf("GC released %v, want %v", released, []netip.Addr{a, c})
	}
	if got := mustList(t, p); !maps.Equal(got, map[Attachment]netip.Addr{podB: b}) {
		t.Fatalf("after GC: %v", got)
	}
	if _, _, err := p.GC(ctx, []Attachment{{"bad/id", "eth0"}}); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("GC with an invalid attachment = %v, want ErrInvalidName", err)
	}
	if len(mustList(t, p)) != 1 {
		t.Fatal("GC with an invalid attachment freed addresses")
	}
	if released, _, err = p.GC(ctx, nil); err != nil || !slices.Equal(released, []netip.Addr{b}) {
		t.Fatalf("GC(nil) = %v, %v; want [%v]", released, err, b)
	}
}

// TestPoolLeaseChange: entries of an earlier subnet are kept and never
// handed out; their owner gets a fresh address when it asks again.
func TestPoolLeaseChange(t *testing.T) {
	f := newFakeStore()
	ctx := context.Background()
	old := NewPool(f, subnet24)
	oldA, oldB := mustAllocate(t, old, podA), mustAllocate(t, old, podB)

	p := NewPool(f, netip.MustParsePrefix("172.7.22.0/24"))
	c := mustAllocate(t, p, podC)
	a := mustAllocate(t, p, podA)
	if !p.Subnet().Contains(a) || !p.Subnet().Contains(c) || a == c {
		t.Fatalf("new subnet handed out %s and %s", a, c)
	}
	want := map[Attachment]netip.Addr{podA: a, podB: oldB, podC: c}
	if got := mustList(t, p); !maps.Equal(got, want) {
		t.Fatalf("List = %v, want %v (old entry of B kept, A moved from %s)", got, want, oldA)
	}
	if ip, ok, err := p.Lookup(ctx, podB); err != nil || !ok || ip != oldB {
		t.Fatalf("Lookup of old entry = %v, %v, %v", ip, ok, err)
	}
	if err := p.Release(ctx, podB); err != nil {
		t.Fatalf("Release of old entry: %v", err)
	}
	if len(mustList(t, p)) != 2 {
		t.Fatal("old entry not released")
	}
}

func TestPoolRejectsInvalidAttachment(t *testing.T) {
	f := newFakeStore()
	p := NewPool(f, subnet24)
	ctx := context.Background()
	for _, a := range []Attachment{{"", "eth0"}, {"abc", ""}, {"..", "eth0"}, {"a/b", "eth0"}, {"abc", "eth 0"},
		{"abc\x00", "eth0"}, {strings.Repeat("x", 256), "eth0"}} {
		if _, err := p.Allocate(ctx, a); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Allocate(%q) = %v, want ErrInvalidName", a, err)
		}
		if err := p.Release(ctx, a); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Release(%q) = %v, want ErrInvalidName", a, err)
		}
		if _, _, err := p.Lookup(ctx, a); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Lookup(%q) = %v, want ErrInvalidName", a, err)
		}
	}
	if f.locks != 0 {
		t.Errorf("invalid attachments reached the store %d times", f.locks)
	}
}

func TestPoolStoreErrors(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("boom")

	f := newFakeStore()
	f.loadErr = boom
	if _, err := NewPool(f, subnet24).Allocate(ctx, podA); !errors.Is(err, boom) {
		t.Errorf("Allocate with failing Load = %v", err)
	}

	f = newFakeStore()
	f.saveErr = boom
	if _, err := NewPool(f, subnet24).Allocate(ctx, podA); !errors.Is(err, boom) {
		t.Errorf("Allocate with failing Save = %v", err)
	}

	f = newFakeStore()
	f.unlockErr = boom
	if _, err := NewPool(f, subnet24).Allocate(ctx, podA); !errors.Is(err, boom) {
		t.Errorf("Allocate with failing Unlock = %v", err)
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := NewPool(newFakeStore(), subnet24).Allocate(canceled, podA); !errors.Is(err, context.Canceled) {
		t.Errorf("Allocate with canceled ctx = %v", err)
	}
}

func TestPoolInvalidSubnet(t *testing.T) {
	f := newFakeStore()
	f.st.Entries[podA] = netip.MustParseAddr("10.0.0.2")
	p := NewPool(f, netip.MustParsePrefix("10.0.0.0/31"))
	if _, err := p.Allocate(context.Background(), podB); !errors.Is(err, ErrExhausted) {
		t.Errorf("Allocate from a /31 = %v, want ErrExhausted", err)
	}
	if err := p.Release(context.Background(), podA); err != nil || len(f.st.Entries) != 0 {
		t.Errorf("Release with an unusable subnet = %v, entries %v", err, f.st.Entries)
	}
	if _, err := NewPool(f, netip.Prefix{}).Allocate(context.Background(), podB); err == nil {
		t.Errorf("Allocate from the zero prefix succeeded")
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		in   string
		want string // substring of the error, "" for valid
	}{
		{"0123456789abcdef", ""},
		{"eth0", ""},
		{"cbr0.weft-net_1", ""},
		{strings.Repeat("a", 255), ""},
		{"", `container ID "" is empty`},
		{".", "not allowed"},
		{"..", "not allowed"},
		{"a/b", "contains '/'"},
		{"/", "contains '/'"},
		{"a\x00b", "control character"},
		{"a b", "space"},
		{"a\nb", "control character"},
		{"a\tb", "control character"},
		{"a\x7fb", "control character"},
		{strings.Repeat("a", 256), "256 bytes"},
	}
	for _, tt := range tests {
		err := ValidateName("container ID", tt.in)
		if tt.want == "" {
			if err != nil {
				t.Errorf("ValidateName(%q) = %v, want nil", tt.in, err)
			}
			continue
		}
		if !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), tt.want) ||
			!strings.Contains(err.Error(), "container ID") {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidName naming the kind and %q", tt.in, err, tt.want)
		}
	}
}
