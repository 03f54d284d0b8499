// Package vxlan is weft's vxlan backend, as flannel's: a device weft.<VNI>
// holding the subnet's network address /32, and per peer a permanent
// neighbour entry (peer subnet .0 -> peer VtepMAC), a permanent FDB entry
// (VtepMAC -> peer PublicIP) and a route "peer subnet via peer .0 dev
// weft.<VNI> onlink". With DirectRouting, a peer on a connected segment gets
// a plain host-gw route instead.
//
// Desired and the Diff functions are pure; Reconcile drives a Programmer and
// Netlink is the Programmer for the kernel.
package vxlan

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/route"
)

// ErrDevice is wrapped when the vxlan device itself cannot be set up; then
// no route may be programmed (or pruned) for the backend.
var ErrDevice = errors.New("vxlan device")

// Overhead is what vxlan encapsulation over IPv4 takes from the underlay MTU.
const Overhead = 50

// DeviceName is the vxlan device of a VNI (flannel names it flannel.<VNI>).
func DeviceName(vni int) string { return fmt.Sprintf("weft.%d", vni) }

// MAC derives the node's VTEP MAC from its public IP and the VNI: the same
// on every restart and reboot, so peers never hold a stale FDB or neighbour
// entry. It is a locally administered unicast address.
func MAC(publicIP netip.Addr, vni int) net.HardwareAddr {
	sum := sha256.Sum256(fmt.Appendf(nil, "weft vtep %s vni %d", publicIP.Unmap(), vni))
	mac := net.HardwareAddr(bytes.Clone(sum[:6]))
	mac[0] = mac[0]&^0x01 | 0x02 // unicast, locally administered
	return mac
}

// MTU is the vxlan device's MTU: the backend's MTU if set, else the
// underlay's less the encapsulation overhead.
func MTU(b netconf.Backend, underlay int) int {
	if b.MTU > 0 {
		return b.MTU
	}
	if underlay <= Overhead {
		return 0 // unknown underlay MTU: leave the kernel's default
	}
	return underlay - Overhead
}

// BackendData is the lease's BackendData, {"VNI":1,"VtepMAC":"..."}.
func BackendData(publicIP netip.Addr, vni int) (json.RawMessage, error) {
	// flannel keeps the VNI in its leases as a uint16, cut down from the
	// configured one, and decodes it so: a VNI above 65535 is written as
	// flannel writes it, or flannel peers could not read the lease. Nobody
	// configures a device from it; every node takes the VNI from the config.
	return json.Marshal(lease.VXLANData{VNI: int(uint16(vni)), VtepMAC: MAC(publicIP, vni)})
}

// Peer is another node as the vxlan backend sees it. VtepMAC is nil when
// its lease carries no usable vxlan data (a host-gw node, or malformed).
type Peer struct {
	Subnet   netip.Prefix
	PublicIP netip.Addr
	VtepMAC  net.HardwareAddr
}

// Peers turns leases into peers, leaving out self and any other lease of
// this node's public IP (a route to it would point back at this node).
func Peers(leases []lease.Lease, self netip.Prefix, selfIP netip.Addr) []Peer {
	peers := make([]Peer, 0, len(leases))
	for _, l := range leases {
		if l.Subnet == self || l.Attrs.PublicIP == selfIP {
			continue
		}
		p := Peer{Subnet: l.Subnet, PublicIP: l.Attrs.PublicIP}
		if l.Attrs.BackendType == netconf.BackendVXLAN {
			if d, err := l.Attrs.VXLAN(); err == nil {
				p.VtepMAC = d.VtepMAC
			}
		}
		peers = append(peers, p)
	}
	slices.SortFunc(peers, func(a, b Peer) int { return a.Subnet.Addr().Compare(b.Subnet.Addr()) })
	return peers
}

// Neigh is a permanent neighbour entry on the vxlan device.
type Neigh struct {
	IP  netip.Addr
	MAC net.HardwareAddr
}

func (n Neigh) String() string { return fmt.Sprintf("%s lladdr %s", n.IP, n.MAC) }

// FDB is a permanent forwarding entry on the vxlan device: frames for MAC
// go to the VTEP at Dst.
type FDB struct {
	MAC net.HardwareAddr
	Dst netip.Addr
}

func (f FDB) String() string { return fmt.Sprintf("%s dst %s", f.MAC, f.Dst) }

// Options are what Desired needs to know about this node.
type Options struct {
	Self          netip.Prefix // this node's subnet
	LinkIndex     int          // the vxlan device
	DirectRouting bool
	// Connected are the underlay's connected prefixes: with DirectRouting a
	// peer whose PublicIP lies in one is reached without encapsulation.
	Connected []netip.Prefix
}

// State is the desired (or actual) state of the vxlan backend.
type State struct {
	Routes []route.Route
	Neighs []Neigh
	FDB    []FDB
	// Unreachable are peers that get nothing: no vxlan data in their lease
	// and not directly reachable.
	Unreachable []Peer
}

// Desired computes the routes, neighbour and FDB entries for peers. A peer
// subnet named twice counts once, first wins; self and invalid peers are
// skipped.
func Desired(peers []Peer, o Options) State {
	self := o.Self.Masked()
	seen := make(map[netip.Prefix]bool, len(peers))
	var s State
	for _, p := range peers {
		dst := p.Subnet.Masked()
		if !dst.IsValid() || !p.PublicIP.IsValid() || dst == self || seen[dst] {
			continue
		}
		seen[dst] = true
		ip := p.PublicIP.Unmap()
		switch {
		case o.DirectRouting && connected(o.Connected, ip):
			s.Routes = append(s.Routes, route.Route{Dst: dst, Gateway: ip})
		case len(p.VtepMAC) == 6:
			gw := dst.Addr()
			s.Routes = append(s.Routes, route.Route{Dst: dst, Gateway: gw, LinkIndex: o.LinkIndex, OnLink: true})
			s.Neighs = append(s.Neighs, Neigh{IP: gw, MAC: p.VtepMAC})
			s.FDB = append(s.FDB, FDB{MAC: p.VtepMAC, Dst: ip})
		default:
			s.Unreachable = append(s.Unreachable, p)
		}
	}
	return s
}

func connected(prefixes []netip.Prefix, ip netip.Addr) bool {
	return slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Bits() < 32 && p.Contains(ip) })
}

// DiffNeighs compares neighbour entries keyed by IP: upsert holds desired
// entries missing or with another MAC, remove the actual entries for IPs no
// desired entry names. Both sorted by IP.
func DiffNeighs(desired, actual []Neigh) (upsert, remove []Neigh) {
	have := make(map[netip.Addr]net.HardwareAddr, len(actual))
	for _, a := range actual {
		have[a.IP] = a.MAC
	}
	want := make(map[netip.Addr]bool, len(desired))
	for _, d := range desired {
		if want[d.IP] {
			continue
		}
		want[d.IP] = true
		if mac, ok := have[d.IP]; !ok || !bytes.Equal(mac, d.MAC) {
			upsert = append(upsert, d)
		}
	}
	for _, a := range actual {
		if !want[a.IP] {
			remove = append(remove, a)
		}
	}
	byIP := func(a, b Neigh) int { return cmp.Or(a.IP.Compare(b.IP), bytes.Compare(a.MAC, b.MAC)) }
	slices.SortFunc(upsert, byIP)
	slices.SortFunc(remove, byIP)
	return upsert, remove
}

// DiffFDB compares FDB entries keyed by MAC: upsert holds desired entries
// missing or pointing elsewhere; remove the actual entries no desired entry
// matches exactly (another MAC, or the old destination of a moved MAC).
func DiffFDB(desired, actual []FDB) (upsert, remove []FDB) {
	type key struct {
		mac string
		dst netip.Addr
	}
	have := make(map[key]bool, len(actual))
	for _, a := range actual {
		have[key{a.MAC.String(), a.Dst}] = true
	}
	want := make(map[key]bool, len(desired))
	macs := make(map[string]bool, len(desired))
	for _, d := range desired {
		if macs[d.MAC.String()] {
			continue
		}
		macs[d.MAC.String()] = true
		k := key{d.MAC.String(), d.Dst}
		want[k] = true
		if !have[k] {
			upsert = append(upsert, d)
		}
	}
	for _, a := range actual {
		if !want[key{a.MAC.String(), a.Dst}] {
			remove = append(remove, a)
		}
	}
	byMAC := func(a, b FDB) int { return cmp.Or(bytes.Compare(a.MAC, b.MAC), a.Dst.Compare(b.Dst)) }
	slices.SortFunc(upsert, byMAC)
	slices.SortFunc(remove, byMAC)
	return upsert, remove
}
