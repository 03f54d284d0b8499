package ipam

import (
	"fmt"
	"math"
	"net/netip"
)

// allocator knows which addresses of a subnet may be handed out and picks
// the next free one. It does no I/O: the Pool gives it the addresses in use
// and the last address handed out.
//
// The usable range is the subnet without its first address (the network
// address), its second (the gateway, on the bridge) and its last (the IPv4
// broadcast; in IPv6 the top of a subnet is reserved anycast space, so it is
// left out there too, which keeps one rule for both families).
type allocator struct {
	subnet      netip.Prefix
	first, last netip.Addr
	size        uint64 // usable addresses, saturated at math.MaxUint64
}

// newAllocator returns the allocator for subnet, which is masked first, so
// flannel's "first usable address/len" form is accepted too.
func newAllocator(subnet netip.Prefix) (allocator, error) {
	if !subnet.IsValid() || subnet.Addr().Is4In6() {
		return allocator{}, fmt.Errorf("invalid subnet %q", subnet)
	}
	subnet = subnet.Masked()
	hostBits := subnet.Addr().BitLen() - subnet.Bits()
	if hostBits < 2 {
		return allocator{}, fmt.Errorf("%w in %s: a /%d has no address besides network, gateway and broadcast",
			ErrExhausted, subnet, subnet.Bits())
	}
	size := uint64(math.MaxUint64)
	if hostBits < 64 {
		size = 1<<hostBits - 3
	}
	return allocator{
		subnet: subnet,
		first:  subnet.Addr().Next().Next(),
		last:   lastAddr(subnet).Prev(),
		size:   size,
	}, nil
}

// gateway is the subnet's first address after the network address.
func gateway(subnet netip.Prefix) netip.Addr {
	if !subnet.IsValid() {
		return netip.Addr{}
	}
	return subnet.Masked().Addr().Next()
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	ip, _ := netip.AddrFromSlice(b)
	return ip
}

// contains reports whether ip may be handed out.
func (a allocator) contains(ip netip.Addr) bool {
	return ip.IsValid() && ip.Compare(a.first) >= 0 && ip.Compare(a.last) <= 0
}

// step returns the address after ip, wrapping from the last to the first.
func (a allocator) step(ip netip.Addr) netip.Addr {
	if ip == a.last {
		return a.first
	}
	return ip.Next()
}

// next returns the first free address after lastReserved, round robin, or
// from the start of the range when lastReserved is not in it. Addresses in
// inUse outside the range are ignored (they are never candidates). The
// error wraps ErrExhausted and says how many addresses are in use.
func (a allocator) next(inUse map[netip.Addr]struct{}, lastReserved netip.Addr) (netip.Addr, error) {
	var used uint64
	for ip := range inUse {
		if a.contains(ip) {
			used++
		}
	}
	if used >= a.size {
		return netip.Addr{}, fmt.Errorf("%w in %s: %d of %d in use", ErrExhausted, a.subnet, used, a.size)
	}
	ip := a.first
	if a.contains(lastReserved) {
		ip = a.step(lastReserved)
	}
	// At most used addresses of the range are taken, so one of used+1
	// consecutive candidates is free: the scan is O(in use), whatever the
	// size of the subnet.
	for range used + 1 {
		if _, taken := inUse[ip]; !taken {
			return ip, nil
		}
		ip = a.step(ip)
	}
	return netip.Addr{}, fmt.Errorf("%w in %s: scan found no free address", ErrExhausted, a.subnet)
}
