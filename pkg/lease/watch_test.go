package lease

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

// watcher runs Watch in the background and collects its events.
type watcher struct {
	events chan Event
	done   chan error
	cancel context.CancelFunc
}

func startWatch(t *testing.T, s *Store, rev int64) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	w := &watcher{events: make(chan Event, 100), done: make(chan error, 1), cancel: cancel}
	go func() {
		w.done <- s.Watch(ctx, rev, func(evs []Event) {
			for _, e := range evs {
				w.events <- e
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

// next waits for the next event, up to a deadline.
func (w *watcher) next(t *testing.T) Event {
	t.Helper()
	select {
	case e := <-w.events:
		return e
	case err := <-w.done:
		t.Fatalf("Watch returned early: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("no watch event within 20s")
	}
	return Event{}
}

func TestWatchAddRemove(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, seedConfig)
	// A lease acquired between List and Watch must still be seen.
	_, rev, err := s.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	a, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{Prefer: netip.MustParsePrefix("172.7.21.0/24"), TTL: time.Hour})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	w := startWatch(t, s, rev)

	e := w.next(t)
	if e.Type != Added || e.Lease.Subnet != a.Subnet || !e.Lease.Attrs.Equal(a.Attrs) || e.Lease.EtcdLease != a.EtcdLease {
		t.Fatalf("first event %v %+v, want added %+v", e.Type, e.Lease, a)
	}
	// No etcd round trip per event for an expiry no watcher uses: it
	// would delay every route and, hung, stall the watch.
	if !e.Lease.Expiration.IsZero() {
		t.Errorf("an added event carries Expiration %s: the watch asked etcd for it", e.Lease.Expiration)
	}
	// Malformed keys are skipped, not fatal.
	if _, err := s.cli.Put(ctx, s.Prefix()+"/subnets/junk", "x"); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, a); err != nil {
		t.Fatalf("Release: %v", err)
	}
	e = w.next(t)
	if e.Type != Removed || e.Lease.Subnet != a.Subnet || e.Lease.Attrs.PublicIP != a.Attrs.PublicIP || e.Lease.ModRevision <= a.ModRevision {
		t.Fatalf("second event %v %+v, want removed %s", e.Type, e.Lease, a.Subnet)
	}
	w.cancel()
	select {
	case err := <-w.done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Watch after cancel = %v, want context.Canceled", err)
		}
		w.done <- err // for the cleanup
	case <-time.After(20 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
}

func TestWatchCompacted(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, seedConfig)
	_, rev, err := s.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	l, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	// Two more writes, so that rev+1 is below the compaction point.
	if err := s.Release(ctx, l); err != nil {
		t.Fatalf("Release: %v", err)
	}
	put, err := s.cli.Put(ctx, s.Prefix()+"/other", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.Compact(ctx, put.Header.Revision); err != nil {
		t.Fatalf("Compact: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err = s.Watch(wctx, rev, func([]Event) { t.Error("events from a compacted revision") })
	if !errors.Is(err, ErrCompacted) {
		t.Fatalf("Watch from a compacted revision = %v, want ErrCompacted", err)
	}
}

func TestEventTypeString(t *testing.T) {
	if Added.String() != "added" || Removed.String() != "removed" || EventType(7).String() != "EventType(7)" {
		t.Error("EventType.String")
	}
}
