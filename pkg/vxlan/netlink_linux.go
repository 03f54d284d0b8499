package vxlan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/nldump"
)

// Node is this node's side of the vxlan backend.
type Node struct {
	Backend  netconf.Backend
	Subnet   netip.Prefix // the node's lease
	PublicIP netip.Addr
	Underlay string // the underlay interface
}

// Apply sets the node's vxlan device up, programs its neighbour and FDB
// entries for leases (pruning others when prune) and returns the desired
// state, whose Routes the caller programs with route.Reconcile. An error
// wrapping ErrDevice means nothing was programmed.
func Apply(n Node, leases []lease.Lease, prune bool) (State, error) {
	under, err := netlink.LinkByName(n.Underlay)
	if err != nil {
		return State{}, fmt.Errorf("%w: underlay %q: %w", ErrDevice, n.Underlay, err)
	}
	local, err := vtepAddr(under, n.PublicIP)
	if err != nil {
		return State{}, fmt.Errorf("%w: %w", ErrDevice, err)
	}
	dev := Device{VNI: n.Backend.VNI, Port: n.Backend.Port, MAC: MAC(n.PublicIP, n.Backend.VNI),
		Underlay: under.Attrs().Index, Local: local, MTU: MTU(n.Backend, under.Attrs().MTU), GBP: n.Backend.GBP}
	link, err := dev.Ensure(n.Subnet.Masked().Addr())
	if err != nil {
		return State{}, fmt.Errorf("%w: %w", ErrDevice, err)
	}
	desired, err := n.desired(link.Attrs().Index, leases)
	if err != nil {
		return State{}, err
	}
	_, err = Reconcile(Netlink{LinkIndex: link.Attrs().Index}, desired, prune)
	return desired, err
}

// vtepAddr is the address the vxlan device sends from: the public IP when
// the underlay holds it, else the underlay's first IPv4 address, as
// flanneld's (its IfaceAddr; the lease advertises ExtAddr). A --public-ip
// that NAT maps to the node is not on the node, and the kernel cannot send
// from an address the node does not hold: every packet would be dropped.
func vtepAddr(under netlink.Link, publicIP netip.Addr) (netip.Addr, error) {
	name := under.Attrs().Name
	ips, err := nldump.GlobalIPv4s(under)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("listing addresses of underlay %s: %w", name, err)
	}
	switch {
	case slices.Contains(ips, publicIP.Unmap()):
		return publicIP.Unmap(), nil
	case len(ips) > 0:
		return ips[0], nil
	}
	return netip.Addr{}, fmt.Errorf("underlay %s holds no IPv4 address to send vxlan from", name)
}

// Planned is the state Apply would program, read without changing
// anything; the device must exist (an error wrapping ErrDevice if not).
// n.Underlay is not read.
func Planned(n Node, leases []lease.Lease) (State, error) {
	link, err := netlink.LinkByName(DeviceName(n.Backend.VNI))
	if err != nil {
		return State{}, fmt.Errorf("%w: %s: %w", ErrDevice, DeviceName(n.Backend.VNI), err)
	}
	return n.desired(link.Attrs().Index, leases)
}

func (n Node) desired(linkIndex int, leases []lease.Lease) (State, error) {
	conn, err := Connected(linkIndex)
	if err != nil {
		return State{}, fmt.Errorf("%w: %w", ErrDevice, err)
	}
	return Desired(Peers(leases, n.Subnet, n.PublicIP), Options{Self: n.Subnet,
		LinkIndex: linkIndex, DirectRouting: n.Backend.DirectRouting, Connected: conn}), nil
}

// Connected returns the prefixes of the node's IPv4 addresses on every link
// but the vxlan device itself (and host-scope ones): the segments this node
// reaches without a gateway. It is read at every reconcile, so the
// DirectRouting choice follows the underlay as links come and go.
func Connected(vxlanIndex int) ([]netip.Prefix, error) {
	addrs, err := nldump.Addrs(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok || a.LinkIndex == vxlanIndex || a.Scope == int(netlink.SCOPE_HOST) {
			continue
		}
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, ones).Masked())
	}
	return out, nil
}

// Device is the vxlan device of a node.
type Device struct {
	VNI, Port int
	MAC       net.HardwareAddr
	Underlay  int // ifindex
	Local     netip.Addr
	MTU       int
	// GBP turns on the Group Based Policy extension (the network's
	// Backend.GBP), which every node of the network must agree on.
	GBP bool
}

// Name is the device's name, weft.<VNI>.
func (d Device) Name() string { return DeviceName(d.VNI) }

// Ensure creates the device (replacing one whose vxlan settings differ),
// sets its MAC and MTU, makes addr/32 its only IPv4 address and brings it up.
func (d Device) Ensure(addr netip.Addr) (netlink.Link, error) {
	link, err := d.create()
	if err != nil {
		return nil, err
	}
	name := d.Name()
	if link.Attrs().HardwareAddr.String() != d.MAC.String() {
		if err := netlink.LinkSetHardwareAddr(link, d.MAC); err != nil {
			return nil, fmt.Errorf("setting MAC of %s: %w", name, err)
		}
	}
	if d.MTU > 0 && link.Attrs().MTU != d.MTU {
		if err := netlink.LinkSetMTU(link, d.MTU); err != nil {
			return nil, fmt.Errorf("setting MTU %d of %s: %w", d.MTU, name, err)
		}
	}
	if err := onlyAddr(link, addr); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bringing up %s: %w", name, err)
	}
	return netlink.LinkByIndex(link.Attrs().Index)
}

func (d Device) create() (netlink.Link, error) {
	name := d.Name()
	if link, err := netlink.LinkByName(name); err == nil {
		if v, ok := link.(*netlink.Vxlan); ok && d.matches(v) {
			return link, nil
		}
		if err := netlink.LinkDel(link); err != nil {
			return nil, fmt.Errorf("removing %s with other settings: %w", name, err)
		}
	}
	v := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: name, MTU: d.MTU, HardwareAddr: d.MAC, TxQLen: -1},
		VxlanId:      d.VNI,
		VtepDevIndex: d.Underlay,
		SrcAddr:      d.Local.AsSlice(),
		Port:         d.Port,
		Learning:     false,
		GBP:          d.GBP,
	}
	if err := netlink.LinkAdd(v); err != nil && !errors.Is(err, syscall.EEXIST) {
		return nil, fmt.Errorf("creating %s: %w", name, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		if other := d.holder(); other != "" { // EEXIST was for the VNI, not the name
			return nil, fmt.Errorf("creating %s: VNI %d on port %d is taken by %s (flanneld's device? stop flanneld and delete %s)", name, d.VNI, d.Port, other, other)
		}
		return nil, fmt.Errorf("looking up %s: %w", name, err)
	}
	return link, nil
}

// holder names another vxlan device with the device's VNI and port: the
// kernel allows one per namespace, so flanneld's flannel.<VNI> blocks ours.
func (d Device) holder() string {
	links, err := nldump.Complete("links", netlink.LinkList)
	if err != nil {
		return ""
	}
	for _, l := range links {
		if v, ok := l.(*netlink.Vxlan); ok && v.VxlanId == d.VNI && v.Port == d.Port && v.Name != d.Name() {
			return v.Name
		}
	}
	return ""
}

func (d Device) matches(v *netlink.Vxlan) bool {
	return v.VxlanId == d.VNI && v.Port == d.Port && v.VtepDevIndex == d.Underlay &&
		v.SrcAddr.Equal(net.IP(d.Local.AsSlice())) && !v.Learning && v.GBP == d.GBP
}

func onlyAddr(link netlink.Link, addr netip.Addr) error {
	name := link.Attrs().Name
	want := &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}
	addrs, err := nldump.Addrs(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if a.IPNet.String() != want.String() {
			if err := netlink.AddrDel(link, &a); err != nil {
				return fmt.Errorf("removing stale address %s from %s: %w", a.IPNet, name, err)
			}
		}
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: want}); err != nil {
		return fmt.Errorf("adding address %s to %s: %w", want, name, err)
	}
	return nil
}

// Netlink programs the neighbour and FDB entries of one vxlan device in the
// calling thread's network namespace.
type Netlink struct {
	LinkIndex int
}

var _ Programmer = Netlink{}

// Neighs lists the device's permanent IPv4 neighbour entries.
func (p Netlink) Neighs() ([]Neigh, error) {
	list, err := nldump.Complete("neighbours", func() ([]netlink.Neigh, error) { return netlink.NeighList(p.LinkIndex, netlink.FAMILY_V4) })
	if err != nil {
		return nil, err
	}
	var out []Neigh
	for _, n := range list {
		ip, ok := netip.AddrFromSlice(n.IP.To4())
		if ok && n.State&netlink.NUD_PERMANENT != 0 && len(n.HardwareAddr) == 6 {
			out = append(out, Neigh{IP: ip, MAC: n.HardwareAddr})
		}
	}
	return out, nil
}

// SetNeigh adds or replaces a permanent neighbour entry.
func (p Netlink) SetNeigh(n Neigh) error {
	err := netlink.NeighSet(&netlink.Neigh{LinkIndex: p.LinkIndex, Family: netlink.FAMILY_V4,
		State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST, IP: n.IP.AsSlice(), HardwareAddr: n.MAC})
	if err != nil {
		return fmt.Errorf("netlink neigh replace: %w", err)
	}
	return nil
}

// DelNeigh removes a neighbour entry; one already gone is no error.
func (p Netlink) DelNeigh(n Neigh) error {
	err := netlink.NeighDel(&netlink.Neigh{LinkIndex: p.LinkIndex, Family: netlink.FAMILY_V4, IP: n.IP.AsSlice(), HardwareAddr: n.MAC})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netlink neigh delete: %w", err)
	}
	return nil
}

// FDB lists the device's unicast FDB entries that have a remote destination.
func (p Netlink) FDB() ([]FDB, error) {
	list, err := nldump.Complete("fdb entries", func() ([]netlink.Neigh, error) { return netlink.NeighList(p.LinkIndex, unix.AF_BRIDGE) })
	if err != nil {
		return nil, err
	}
	var out []FDB
	for _, n := range list {
		ip, ok := netip.AddrFromSlice(n.IP.To4())
		if ok && len(n.HardwareAddr) == 6 && n.HardwareAddr[0]&1 == 0 && !isZero(n.HardwareAddr) {
			out = append(out, FDB{MAC: n.HardwareAddr, Dst: ip})
		}
	}
	return out, nil
}

// SetFDB adds or replaces a permanent FDB entry.
func (p Netlink) SetFDB(f FDB) error {
	if err := netlink.NeighSet(p.fdb(f)); err != nil {
		return fmt.Errorf("netlink fdb replace: %w", err)
	}
	return nil
}

// DelFDB removes an FDB entry; one already gone is no error.
func (p Netlink) DelFDB(f FDB) error {
	if err := netlink.NeighDel(p.fdb(f)); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netlink fdb delete: %w", err)
	}
	return nil
}

func (p Netlink) fdb(f FDB) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: p.LinkIndex, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, IP: f.Dst.AsSlice(), HardwareAddr: f.MAC}
}

func isZero(mac net.HardwareAddr) bool {
	for _, b := range mac {
		if b != 0 {
			return false
		}
	}
	return true
}
