package lease

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EventType says whether a lease appeared (or changed) or went away.
type EventType int

// Event types.
const (
	Added EventType = iota
	Removed
)

func (t EventType) String() string {
	switch t {
	case Added:
		return "added"
	case Removed:
		return "removed"
	default:
		return fmt.Sprintf("EventType(%d)", int(t))
	}
}

// Event is one change of a subnet key. A Removed event carries the lease's
// last attributes when etcd still has them, and the revision of the deletion
// as ModRevision. Events carry no Expiration: asking etcd for it would cost
// a round trip per event on the watch's goroutine, delaying every route
// (and stalling the watch while that call hangs) for a figure no watcher
// uses; FillExpiration gets it when wanted.
type Event struct {
	Type  EventType
	Lease Lease
}

// Watch calls fn with each batch of changes to the subnet keys made after
// revision fromRevision (the revision List returned; 0 means from now). It
// returns when ctx is done (with ctx's error) or the watch fails; an error
// wrapping ErrCompacted means fromRevision is gone and the caller must List
// again. fn runs on Watch's goroutine. To resume after an error without
// re-listing, watch from the ModRevision of the last event seen.
func (s *Store) Watch(ctx context.Context, fromRevision int64, fn func([]Event)) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	dir := subnetsDir(s.prefix)
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}
	if fromRevision > 0 {
		opts = append(opts, clientv3.WithRev(fromRevision+1))
	}
	for resp := range s.cli.Watch(wctx, dir, opts...) {
		if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
			return fmt.Errorf("watching %s from revision %d (compacted at %d): %w",
				dir, fromRevision, resp.CompactRevision, ErrCompacted)
		}
		if err := resp.Err(); err != nil {
			return fmt.Errorf("watching %s: %w", dir, err)
		}
		if events := s.events(resp.Events); len(events) > 0 {
			fn(events)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("watching %s: watch channel closed", dir)
}

// events converts etcd events, skipping malformed keys with a warning.
func (s *Store) events(evs []*clientv3.Event) []Event {
	out := make([]Event, 0, len(evs))
	for _, ev := range evs {
		e, err := s.event(ev)
		if err != nil {
			s.log.Warn("skipping malformed subnet lease event", "key", string(ev.Kv.Key), "error", err)
			continue
		}
		out = append(out, e)
	}
	return out
}

func (s *Store) event(ev *clientv3.Event) (Event, error) {
	if ev.Type == clientv3.EventTypeDelete {
		return s.removed(ev)
	}
	l, err := decodeKV(ev.Kv)
	if err != nil {
		return Event{}, err
	}
	return Event{Type: Added, Lease: l}, nil
}

func (s *Store) removed(ev *clientv3.Event) (Event, error) {
	subnet, err := ParseSubnetKey(string(ev.Kv.Key))
	if err != nil {
		return Event{}, err
	}
	l := Lease{Subnet: subnet, key: string(ev.Kv.Key)}
	if ev.PrevKv != nil {
		if prev, err := decodeKV(ev.PrevKv); err == nil {
			l = prev
		}
	}
	l.ModRevision = ev.Kv.ModRevision
	return Event{Type: Removed, Lease: l}, nil
}
