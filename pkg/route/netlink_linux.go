package route

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weft-cni/weft/pkg/nldump"
)

// Protocol marks the routes weft programs (rtm_protocol; `ip route` shows
// "proto 211"). List sees only these, so pruning never touches a route of
// other software inside the cluster network; Replace takes over a route of
// another protocol to the same destination (one a version before this one
// left unmarked, say).
const Protocol netlink.RouteProtocol = 211

// Netlink programs routes in the main table of the calling thread's network
// namespace.
type Netlink struct{}

var _ Programmer = Netlink{}

// List returns weft's main-table unicast routes (Protocol) of network's IP
// family whose destination lies inside network (network itself included).
func (Netlink) List(network netip.Prefix) ([]Route, error) {
	network = network.Masked()
	nlRoutes, err := listMain(family(network.Addr()))
	if err != nil {
		return nil, err
	}
	var routes []Route
	for _, nr := range nlRoutes {
		if nr.Type != unix.RTN_UNICAST || nr.Dst == nil || nr.Protocol != Protocol {
			continue
		}
		dst, ok := prefixOf(nr.Dst)
		if !ok || dst.Bits() < network.Bits() || !network.Contains(dst.Addr()) {
			continue
		}
		gw, _ := netip.AddrFromSlice(nr.Gw)
		routes = append(routes, Route{
			Dst:       dst,
			Gateway:   gw.Unmap(),
			LinkIndex: nr.LinkIndex,
			OnLink:    nr.Flags&unix.RTNH_F_ONLINK != 0,
		})
	}
	return routes, nil
}

// listMain dumps the main routing table of one family, retrying a dump the
// kernel interrupted: Reconcile prunes by what it lists.
func listMain(family int) ([]netlink.Route, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
	routes, err := nldump.Routes(family, filter, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	return routes, nil
}

// Replace adds r, or replaces the main-table route to r.Dst.
func (Netlink) Replace(r Route) error {
	if err := netlink.RouteReplace(toNetlink(r)); err != nil {
		return fmt.Errorf("netlink route replace: %w", err)
	}
	return nil
}

// Delete removes r; a route that is already gone is no error.
func (Netlink) Delete(r Route) error {
	err := netlink.RouteDel(toNetlink(r))
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("netlink route delete: %w", err)
	}
	return nil
}

func toNetlink(r Route) *netlink.Route {
	dst := r.Dst.Masked()
	nr := &netlink.Route{
		Dst: &net.IPNet{
			IP:   dst.Addr().AsSlice(),
			Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen()),
		},
		LinkIndex: r.LinkIndex,
		Table:     unix.RT_TABLE_MAIN,
		Scope:     netlink.SCOPE_UNIVERSE,
		Protocol:  Protocol,
	}
	if r.Gateway.IsValid() {
		nr.Gw = r.Gateway.AsSlice()
	}
	if r.OnLink {
		nr.Flags = unix.RTNH_F_ONLINK
	}
	return nr
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	addr, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	addr = addr.Unmap()
	ones, bits := n.Mask.Size()
	if bits != addr.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(addr, ones).Masked(), true
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// OnLink reports whether ip is reachable without a gateway: on a connected
// segment, as host-gw needs its peers to be.
func (Netlink) OnLink(ip netip.Addr) (bool, error) {
	routes, err := netlink.RouteGet(ip.AsSlice())
	if err != nil {
		return false, fmt.Errorf("route lookup for %s: %w", ip, err)
	}
	for _, r := range routes {
		if r.Gw == nil {
			return true, nil
		}
	}
	return false, nil
}
