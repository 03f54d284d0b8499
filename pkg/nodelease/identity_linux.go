package nodelease

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/weft-cni/weft/pkg/nldump"
)

// Identity is how this node shows itself to its peers.
type Identity struct {
	PublicIP netip.Addr
	Iface    string
	MTU      int // the underlay interface's MTU
}

// ResolveIdentity finds the node's public IP and underlay interface in the
// current network namespace: publicIP if set, else the first IPv4 address of
// iface, else of the interface holding the default route.
func ResolveIdentity(c *Config) (Identity, error) {
	link, err := underlayLink(c)
	if err != nil {
		return Identity{}, err
	}
	id := Identity{Iface: link.Attrs().Name, MTU: link.Attrs().MTU}
	if c.PublicIP != "" {
		id.PublicIP = netip.MustParseAddr(c.PublicIP) // validated
		return id, nil
	}
	ips, err := nldump.GlobalIPv4s(link)
	if err != nil {
		return Identity{}, fmt.Errorf("listing addresses of %s: %w", id.Iface, err)
	}
	if len(ips) > 0 {
		id.PublicIP = ips[0]
		return id, nil
	}
	return Identity{}, fmt.Errorf("interface %s has no IPv4 address to use as the node's public IP: set publicIP", id.Iface)
}

func underlayLink(c *Config) (netlink.Link, error) {
	if c.Iface != "" {
		link, err := netlink.LinkByName(c.Iface)
		if err != nil {
			return nil, fmt.Errorf("iface %q: %w", c.Iface, err)
		}
		return link, nil
	}
	if c.PublicIP != "" {
		if link, err := linkWithAddr(netip.MustParseAddr(c.PublicIP)); err == nil {
			return link, nil
		}
	}
	routes, err := nldump.Routes(netlink.FAMILY_V4, &netlink.Route{Dst: nil}, netlink.RT_FILTER_DST)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.LinkIndex > 0 {
			return netlink.LinkByIndex(r.LinkIndex)
		}
	}
	return nil, errors.New("no default route to find the node's interface: set iface or publicIP")
}

func linkWithAddr(ip netip.Addr) (netlink.Link, error) {
	addrs, err := nldump.Addrs(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if a.IP.Equal(net.IP(ip.AsSlice())) {
			return netlink.LinkByIndex(a.LinkIndex)
		}
	}
	return nil, fmt.Errorf("no interface holds %s", ip)
}
