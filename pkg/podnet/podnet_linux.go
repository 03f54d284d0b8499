// Package podnet wires a pod into the node bridge: a veth pair whose pod end
// gets the IPAM address and routes, and whose node end joins the bridge.
package podnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ip"
	cniipam "github.com/containernetworking/plugins/pkg/ipam"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weft-cni/weft/pkg/ipam"
	"github.com/weft-cni/weft/pkg/nldump"
)

// Plugged is a pod's veth pair made before its address is known: its node
// end already carries a mark naming the attachment (with no address yet),
// so a GC that runs while the address is being allocated sees a pod there
// and keeps the allocation (Live, read under the IPAM store's lock).
type Plugged struct {
	podNS     ns.NetNS
	port      Port
	mark      podMark
	host, pod net.Interface
}

// Port is where and how a pod's veth joins the node.
type Port struct {
	Bridge  netlink.Link
	Hairpin bool
	MTU     int
}

// Plug creates the veth pair for owner.IfName in the pod namespace podNS
// with its node end in the caller's namespace, marked as pending. owner
// must be Markable on the port's bridge (the plugin refuses others before
// it changes anything).
func Plug(podNS ns.NetNS, owner ipam.Attachment, port Port) (*Plugged, error) {
	p := &Plugged{podNS: podNS, port: port,
		mark: podMark{owner: owner, addr: netip.IPv4Unspecified(), bridge: port.Bridge.Attrs().Name, hairpin: port.Hairpin}}
	err := podNS.Do(func(hostNS ns.NetNS) error {
		var err error
		p.host, p.pod, err = ip.SetupVeth(owner.IfName, port.MTU, "", hostNS)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("creating veth %s in %s: %w", owner.IfName, podNS.Path(), err)
	}
	if err := p.writeMark(); err != nil {
		return nil, err
	}
	return p, nil
}

// writeMark sets the node end's alias to the pod's mark.
func (p *Plugged) writeMark() error {
	m := p.mark.render()
	if m == "" {
		return Markable(p.mark.owner, p.mark.bridge)
	}
	if err := netlink.LinkSetAlias(p.hostLink(), m); err != nil {
		return fmt.Errorf("marking %s: %w", p.host.Name, err)
	}
	return nil
}

func (p *Plugged) hostLink() netlink.Link {
	return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: p.host.Index, Name: p.host.Name}}
}

// Wire configures result's addresses and routes on the pod's end, attaches
// the node end to the port's bridge and marks it with addr (see Live). It
// fills result.Interfaces (bridge, node veth, pod interface) and points the
// IPs at the pod interface.
func (p *Plugged) Wire(addr netip.Addr, result *current.Result) error {
	bridge := p.port.Bridge
	result.Interfaces = []*current.Interface{
		{Name: bridge.Attrs().Name, Mac: bridge.Attrs().HardwareAddr.String()},
		{Name: p.host.Name, Mac: p.host.HardwareAddr.String()},
		{Name: p.pod.Name, Mac: p.pod.HardwareAddr.String(), Sandbox: p.podNS.Path()},
	}
	for _, ipc := range result.IPs {
		ipc.Interface = current.Int(2)
	}
	err := p.podNS.Do(func(ns.NetNS) error { return cniipam.ConfigureIface(p.mark.owner.IfName, result) })
	if err != nil {
		return fmt.Errorf("configuring %s: %w", p.mark.owner.IfName, err)
	}
	host := p.hostLink()
	err = netlink.LinkSetMaster(host, bridge)
	if err == nil && p.port.Hairpin {
		err = netlink.LinkSetHairpin(host, true)
	}
	p.mark.addr = addr
	if err == nil {
		err = p.writeMark()
	}
	if err != nil {
		return fmt.Errorf("attaching %s to bridge %s: %w", p.host.Name, bridge.Attrs().Name, err)
	}
	return nil
}

// Detach deletes the pod's interface (and so the pair) if the namespace and
// the link still exist. It succeeds when either is already gone, and
// refuses (ErrNotPodNS) a namespace that is the node's own: a DEL naming it
// would delete a node interface (the bridge, eth0) of that name.
func Detach(netnsPath, ifName string) error {
	if netnsPath == "" {
		return nil
	}
	podNS, err := OpenNS(netnsPath)
	if err != nil {
		var nsErr ns.NSPathNotExistErr
		if errors.As(err, &nsErr) {
			return nil
		}
		var notNS ns.NSPathNotNSErr
		if errors.As(err, &notNS) {
			return nil
		}
		return fmt.Errorf("opening netns %s: %w", netnsPath, err)
	}
	defer podNS.Close()
	return podNS.Do(func(ns.NetNS) error {
		if err := ip.DelLinkByName(ifName); err != nil && !errors.Is(err, ip.ErrLinkNotFound) {
			return fmt.Errorf("deleting %s: %w", ifName, err)
		}
		return nil
	})
}

// Check verifies that the pod's interface still has prev's addresses and
// that prev's routes are present, and on the node that its veth's other end
// is an up port of bridge, which holds the gateway: a pod cut off on the
// node's side fails CHECK too.
func Check(podNS ns.NetNS, ifName string, prev *current.Result, bridge string) error {
	var peer int
	err := podNS.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("pod interface %s: %w", ifName, err)
		}
		veth, ok := link.(*netlink.Veth)
		if !ok {
			return fmt.Errorf("pod interface %s is a %s, not a veth", ifName, link.Type())
		}
		if peer, err = netlink.VethPeerIndex(veth); err != nil {
			return fmt.Errorf("pod interface %s: finding its node end: %w", ifName, err)
		}
		if err := ip.ValidateExpectedInterfaceIPs(ifName, prev.IPs); err != nil {
			return fmt.Errorf("pod interface %s: %w", ifName, err)
		}
		if err := ip.ValidateExpectedRoute(prev.Routes); err != nil {
			return fmt.Errorf("pod routes: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return checkPort(peer, bridge, prev)
}

// checkPort verifies the node's end of a pod's veth: up, a port of bridge,
// and bridge up with prev's gateway.
func checkPort(index int, bridge string, prev *current.Result) error {
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", bridge, err)
	}
	port, err := netlink.LinkByIndex(index)
	if err != nil {
		return fmt.Errorf("the pod's veth end on the node (ifindex %d): %w", index, err)
	}
	name := port.Attrs().Name
	switch {
	case port.Attrs().MasterIndex != br.Attrs().Index:
		return fmt.Errorf("%s, the pod's veth end on the node, is not a port of %s", name, bridge)
	case port.Attrs().Flags&net.FlagUp == 0:
		return fmt.Errorf("%s, the pod's veth end on the node, is down", name)
	case br.Attrs().Flags&net.FlagUp == 0:
		return fmt.Errorf("bridge %s is down", bridge)
	}
	addrs, err := nldump.Addrs(br, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", bridge, err)
	}
	for _, ipc := range prev.IPs {
		if ipc.Gateway.To4() == nil { // none, or IPv6: the bridge holds IPv4 only
			continue
		}
		if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IP.Equal(ipc.Gateway) }) {
			return fmt.Errorf("bridge %s does not hold the gateway %s", bridge, ipc.Gateway)
		}
	}
	return nil
}
