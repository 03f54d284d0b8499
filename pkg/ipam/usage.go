package ipam

import (
	"net/netip"
	"slices"
)

// Usage is how much of a subnet a store's state uses.
type Usage struct {
	Subnet netip.Prefix // masked
	InUse  int          // addresses of Subnet held
	Size   uint64       // addresses of Subnet that can be handed out
	// Gone are the holders of addresses of Subnet that have no interface on
	// the node (pods gone without a DEL), in order; nil when the live
	// attachments are not known. A full subnet frees them (Pool.AdoptLive).
	Gone []Attachment
	// GoneUnknown, when set, is why Gone is not known (nil): a port of
	// the bridge with no mark (ErrUnattributed), or the node's interfaces
	// could not be read. A full subnet then frees nothing.
	GoneUnknown error
	// Missing: the store has no state yet (no address handed out on this
	// node, or it was looked for in the wrong place).
	Missing bool
}

// Full reports whether no address of the subnet is left to hand out.
func (u Usage) Full() bool { return uint64(u.InUse) >= u.Size }

// SubnetUsage reports st's use of subnet. live, when not nil, is the
// attachments that have an interface on the node (a LiveFunc's answer).
func SubnetUsage(st *State, subnet netip.Prefix, live map[Attachment]netip.Addr) (Usage, error) {
	alloc, err := newAllocator(subnet)
	if err != nil {
		return Usage{}, err
	}
	u := Usage{Subnet: alloc.subnet, Size: alloc.size, Missing: st.Missing}
	for _, addr := range st.Entries {
		if alloc.contains(addr) {
			u.InUse++
		}
	}
	if live != nil {
		u.Gone = goneHolders(st, alloc, live)
	}
	return u, nil
}

// goneHolders are the attachments of st holding an address of alloc's
// subnet that live does not report, in order.
func goneHolders(st *State, alloc allocator, live map[Attachment]netip.Addr) []Attachment {
	var gone []Attachment
	for a, addr := range st.Entries {
		if _, ok := live[a]; !ok && alloc.contains(addr) {
			gone = append(gone, a)
		}
	}
	slices.SortFunc(gone, compareAttachments)
	return gone
}
