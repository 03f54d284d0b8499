package ipam

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// Pool allocates addresses of one subnet, the node's lease, keeping them in
// a Store. Every method is one locked read-modify-write of the Store, so
// many Pools, in many processes, may share one Store's backing files.
//
// Entries whose address lies outside the current subnet (the node's lease
// changed) are kept until released and never handed out again; Allocate
// for such an attachment gives it a fresh address in the current subnet.
type Pool struct {
	store     Store
	subnet    netip.Prefix
	alloc     allocator
	initErr   error // why subnet cannot be allocated from, if it cannot
	live      LiveFunc
	onReclaim func(Attachment, netip.Addr)
}

// LiveFunc reports the attachments that hold an address on the node right
// now, as the kernel knows them (the weft plugin reads its veths' marks).
// When it also finds pod interfaces it cannot attribute, it returns the
// attachments it could name together with an error wrapping
// ErrUnattributed.
type LiveFunc func() (map[Attachment]netip.Addr, error)

// AdoptLive makes Allocate, when it finds no stored state (a new node, or a
// store wiped while pods still run), first record the addresses live
// reports, so that none of them is handed out again.
//
// It also lets Allocate, when the subnet is full, free the addresses of
// attachments that have no interface on the node any more: pods that died
// without a DEL (a node crash, a runtime that lost its state), whose
// addresses would otherwise stay taken until a GC. The interfaces are read
// under the store's lock, as GC reads them, so an ADD under way, which
// plugs its veth in before it allocates, is never taken for dead.
// onReclaim, if not nil, is told of each address so freed.
func (p *Pool) AdoptLive(live LiveFunc, onReclaim func(Attachment, netip.Addr)) {
	p.live, p.onReclaim = live, onReclaim
}

// NewPool returns a Pool handing out addresses of subnet (masked, so
// 172.7.21.1/24 means 172.7.21.0/24). A subnet that is invalid or too small
// to hold an address makes Allocate fail; the other methods still work.
func NewPool(store Store, subnet netip.Prefix) *Pool {
	alloc, err := newAllocator(subnet)
	if subnet.IsValid() {
		subnet = subnet.Masked()
	}
	return &Pool{store: store, subnet: subnet, alloc: alloc, initErr: err}
}

// Subnet returns the (masked) subnet the Pool hands out addresses from.
func (p *Pool) Subnet() netip.Prefix { return p.subnet }

// Gateway returns the subnet's gateway, its first address after the network
// address, which is never handed out.
func (p *Pool) Gateway() netip.Addr { return gateway(p.subnet) }

// Allocate returns the address of attachment a, allocating one when a has
// none in the current subnet. The error wraps ErrExhausted when the subnet
// is full and ErrInvalidName when a is not a valid attachment.
func (p *Pool) Allocate(ctx context.Context, a Attachment) (netip.Addr, error) {
	if err := a.validate(); err != nil {
		return netip.Addr{}, err
	}
	if p.initErr != nil {
		return netip.Addr{}, p.initErr
	}
	var ip netip.Addr
	err := p.update(ctx, func(st *State) (bool, error) {
		adopted, err := p.adopt(st)
		if err != nil {
			return false, err
		}
		if old, ok := st.Entries[a]; ok {
			if p.alloc.contains(old) {
				ip = old
				return adopted, nil
			}
			delete(st.Entries, a) // from an earlier lease: replace it
		}
		next, err := p.alloc.next(addressesInUse(st), st.Last)
		if errors.Is(err, ErrExhausted) && p.live != nil {
			reclaimed, rerr := p.reclaim(st)
			if rerr != nil {
				return false, errors.Join(err, rerr)
			}
			if reclaimed {
				next, err = p.alloc.next(addressesInUse(st), st.Last)
			}
		}
		if err != nil {
			return false, err
		}
		ip = next
		st.Entries[a] = next
		st.Last = next
		return true, nil
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocating address for %s/%s: %w", a.ContainerID, a.IfName, err)
	}
	return ip, nil
}

// adopt records the live attachments in a state that was missing. Live
// addresses are taken as they are: a duplicate or one outside the subnet is
// still kept out of the free list by the first attachment that claims it.
func (p *Pool) adopt(st *State) (bool, error) {
	if !st.Missing || p.live == nil {
		return false, nil
	}
	live, err := p.live()
	if err != nil && !errors.Is(err, ErrUnattributed) {
		return false, fmt.Errorf("reading the live attachments of a missing store: %w", err)
	}
	held := make(map[netip.Addr]bool, len(live))
	for _, a := range slices.SortedFunc(maps.Keys(live), compareAttachments) {
		addr := live[a]
		if a.validate() != nil || checkAddr(addr) != nil || addr.IsUnspecified() || held[addr] { // 0.0.0.0: a pod still being added
			continue
		}
		held[addr] = true
		st.Entries[a] = addr
	}
	return len(held) > 0, nil
}

func addressesInUse(st *State) map[netip.Addr]struct{} {
	inUse := make(map[netip.Addr]struct{}, len(st.Entries))
	for _, addr := range st.Entries {
		inUse[addr] = struct{}{}
	}
	return inUse
}

// reclaim frees, in a full subnet, the addresses of the attachments that
// have no interface on the node (see AdoptLive). It reports whether it
// freed any. It frees nothing while some pod interface cannot be
// attributed (ErrUnattributed): that pod holds one of the addresses, and
// which one is not known.
func (p *Pool) reclaim(st *State) (bool, error) {
	live, err := p.live()
	if err != nil {
		return false, fmt.Errorf("finding pods' interfaces, to free the addresses of pods that are gone: %w", err)
	}
	dead := goneHolders(st, p.alloc, live)
	for _, a := range dead {
		addr := st.Entries[a]
		delete(st.Entries, a)
		if p.onReclaim != nil {
			p.onReclaim(a, addr)
		}
	}
	return len(dead) > 0, nil
}

// Release frees the address of attachment a. Releasing an attachment that
// has no address succeeds.
func (p *Pool) Release(ctx context.Context, a Attachment) error {
	if err := a.validate(); err != nil {
		return err
	}
	err := p.update(ctx, func(st *State) (bool, error) {
		if _, ok := st.Entries[a]; !ok {
			return false, nil
		}
		delete(st.Entries, a)
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("releasing address of %s/%s: %w", a.ContainerID, a.IfName, err)
	}
	return nil
}

// Lookup returns the address held by attachment a, wherever it lies (CHECK
// compares it with what the pod has). A missing store adopts the live
// attachments first, as Allocate does, so CHECK passes for a running pod
// after the store was wiped.
func (p *Pool) Lookup(ctx context.Context, a Attachment) (netip.Addr, bool, error) {
	if err := a.validate(); err != nil {
		return netip.Addr{}, false, err
	}
	var (
		ip netip.Addr
		ok bool
	)
	err := p.update(ctx, func(st *State) (bool, error) {
		adopted, err := p.adopt(st) // a wiped store knows its pods again
		if err != nil {
			return false, err
		}
		ip, ok = st.Entries[a]
		return adopted, nil
	})
	if err != nil {
		return netip.Addr{}, false, fmt.Errorf("looking up address of %s/%s: %w", a.ContainerID, a.IfName, err)
	}
	return ip, ok, nil
}

// GC frees the address of every attachment not in valid and returns the
// freed addresses in order. An invalid attachment in valid is an error and
// frees nothing: a runtime sending garbage is no reason to drop addresses.
//
// With live attachments known (AdoptLive), an attachment whose veth exists
// is kept whatever valid says, and returned in wired when valid lacks it:
// as with DEL, an address is free only once no interface holds it. They
// are read under the store's lock, so an ADD that plugged its veth in
// before allocating is never missed.
func (p *Pool) GC(ctx context.Context, valid []Attachment) (released []netip.Addr, wired []Attachment, err error) {
	keep := make(map[Attachment]struct{}, len(valid))
	for _, a := range valid {
		if err := a.validate(); err != nil {
			return nil, nil, fmt.Errorf("garbage collecting addresses: valid attachment: %w", err)
		}
		keep[a] = struct{}{}
	}
	err = p.update(ctx, func(st *State) (bool, error) {
		var live map[Attachment]netip.Addr
		candidate := false // an entry the list lacks: only then are the veths read
		for a := range st.Entries {
			if _, ok := keep[a]; !ok {
				candidate = true
				break
			}
		}
		if p.live != nil && candidate {
			var err error
			// Unattributed interfaces: the runtime's list still keeps
			// their pods, as it does under host-local.
			if live, err = p.live(); err != nil && !errors.Is(err, ErrUnattributed) {
				return false, fmt.Errorf("finding pods' interfaces: %w", err)
			}
		}
		for a, ip := range st.Entries {
			if _, ok := keep[a]; ok {
				continue
			}
			if _, ok := live[a]; ok {
				wired = append(wired, a)
				continue
			}
			delete(st.Entries, a)
			released = append(released, ip)
		}
		return len(released) > 0, nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("garbage collecting addresses: %w", err)
	}
	slices.SortFunc(released, netip.Addr.Compare)
	slices.SortFunc(wired, compareAttachments)
	return released, wired, nil
}

// List returns every allocation, including those outside the current
// subnet.
func (p *Pool) List(ctx context.Context) (map[Attachment]netip.Addr, error) {
	var entries map[Attachment]netip.Addr
	err := p.update(ctx, func(st *State) (bool, error) {
		entries = maps.Clone(st.Entries)
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	if entries == nil {
		entries = make(map[Attachment]netip.Addr)
	}
	return entries, nil
}

// update runs fn on the stored state under the store's lock and saves the
// state when fn reports a change.
func (p *Pool) update(ctx context.Context, fn func(*State) (bool, error)) (err error) {
	if err := p.store.Lock(ctx); err != nil {
		return fmt.Errorf("locking store: %w", err)
	}
	defer func() {
		if uerr := p.store.Unlock(); uerr != nil {
			err = errors.Join(err, fmt.Errorf("unlocking store: %w", uerr))
		}
	}()
	st, err := p.store.Load()
	if err != nil {
		return fmt.Errorf("loading state: %w", err)
	}
	if st.Entries == nil {
		st.Entries = make(map[Attachment]netip.Addr)
	}
	changed, err := fn(st)
	if err != nil || !changed {
		return err
	}
	if err := p.store.Save(st); err != nil {
		return fmt.Errorf("saving state: %w", err)
	}
	return nil
}
