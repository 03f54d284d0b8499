// Package hostnet prepares the node's side of the pod network: the bridge
// holding the subnet's gateway address, ip_forward, host-gw routes to the
// other nodes and the masquerade rules. Setup runs once per lease generation;
// the bridge's alias records which lease it was done for, so the per-pod fast
// path is one netlink lookup.
package hostnet

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weft-cni/weft/pkg/masq"
	"github.com/weft-cni/weft/pkg/nldump"
	"github.com/weft-cni/weft/pkg/route"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

// DefaultBridge is the bridge pods attach to.
const DefaultBridge = "weft0"

const aliasPrefix = "weft lease "

// Ready reports whether the bridge exists and was set up for file's lease
// less than maxAge ago, or a sync failed for want of etcd and its retry is
// not due yet (MarkDegraded): when it is, ADD skips etcd, routes and the full
// rule check. maxAge 0 means every call re-syncs while etcd answers.
func Ready(bridge string, file *subnetfile.File, maxAge time.Duration, now time.Time) (netlink.Link, bool) {
	link, err := netlink.LinkByName(bridge)
	if err != nil {
		return nil, false
	}
	m, ok := parseAlias(link.Attrs().Alias)
	return link, ok && m.trusted(file.Lease(), maxAge, now)
}

// trusted reports whether the mark lets an ADD for lease skip the sync: it
// names that lease and either its sync is younger than maxAge or a retry
// after a failed sync is not due yet. Marks from the future (a clock set
// back) are not trusted.
func (m mark) trusted(lease netip.Prefix, maxAge time.Duration, now time.Time) bool {
	if m.lease != lease || m.synced.After(now) {
		return false
	}
	fresh := now.Sub(m.synced) < maxAge
	waiting := now.Before(m.retry) && m.retry.Sub(now) <= DegradedRetry
	return fresh || waiting
}

// DegradedRetry is how long ADDs use the subnet file without trying etcd
// again after a sync found etcd unreachable: during an outage, at most one
// ADD in this period waits for the sync timeout.
const DegradedRetry = 15 * time.Second

// mark is what the bridge's alias records: the lease it was set up for, the
// last complete sync and, after a failed one, when to try again. The alias
// reads "weft lease 172.7.21.0/24 synced 1732470000" or, degraded,
// "weft lease 172.7.21.0/24 synced 1732470000 retry 1732470015".
type mark struct {
	lease         netip.Prefix
	synced, retry time.Time
}

func (m mark) String() string {
	s := fmt.Sprintf("%s%s synced %d", aliasPrefix, m.lease, m.synced.Unix())
	if !m.retry.IsZero() {
		s += fmt.Sprintf(" retry %d", m.retry.Unix())
	}
	return s
}

func parseAlias(s string) (mark, bool) {
	rest, ok := strings.CutPrefix(s, aliasPrefix)
	if !ok {
		return mark{}, false
	}
	fields := strings.Fields(rest)
	if (len(fields) != 3 && len(fields) != 5) || fields[1] != "synced" || (len(fields) == 5 && fields[3] != "retry") {
		return mark{}, false
	}
	var m mark
	var err error
	if m.lease, err = netip.ParsePrefix(fields[0]); err != nil {
		return mark{}, false
	}
	if m.synced, ok = parseUnix(fields[2]); !ok {
		return mark{}, false
	}
	if len(fields) == 5 {
		if m.retry, ok = parseUnix(fields[4]); !ok {
			return mark{}, false
		}
	}
	return m, true
}

func parseUnix(s string) (time.Time, bool) {
	secs, err := strconv.ParseInt(s, 10, 64)
	return time.Unix(secs, 0), err == nil
}

// GatewayMAC is the bridge's MAC for a gateway address: 0a:58 and the
// address's four bytes (a locally administered unicast MAC, as other
// Kubernetes networks derive them). Set explicitly, it stays put while pods
// come and go, and is the same after the bridge is recreated (a reboot).
func GatewayMAC(gw netip.Addr) net.HardwareAddr {
	b := gw.As4()
	return net.HardwareAddr{0x0a, 0x58, b[0], b[1], b[2], b[3]}
}

// EnsureBridge creates the bridge if needed, fixes its MAC (GatewayMAC),
// gives it the gateway address (removing addresses of an older lease) and
// brings it up.
func EnsureBridge(name string, file *subnetfile.File, mtu int) (netlink.Link, error) {
	mac := GatewayMAC(file.Gateway())
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu, TxQLen: -1, HardwareAddr: mac}}
	if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, syscall.EEXIST) {
		return nil, fmt.Errorf("creating bridge %s: %w", name, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("looking up bridge %s: %w", name, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("%s exists and is a %s, not a bridge", name, link.Type())
	}
	if !bytes.Equal(link.Attrs().HardwareAddr, mac) {
		// A bridge whose MAC was never set takes its lowest port's, which
		// changes as pods come and go; pods would then send to a gateway MAC
		// the bridge no longer answers for until their ARP entries expire.
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return nil, fmt.Errorf("fixing the MAC of %s to %s: %w", name, mac, err)
		}
	}
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return nil, fmt.Errorf("setting MTU of %s: %w", name, err)
		}
	}
	if err := setGateway(link, file.Subnet); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bringing up %s: %w", name, err)
	}
	if err := ensureSubnetRoute(link, file.Subnet); err != nil {
		return nil, err
	}
	return link, nil
}

// ensureSubnetRoute puts back the bridge's connected route to the subnet
// when it is gone (`ip route flush`, a route deleted by hand): the kernel
// adds it only when the address is added, and without it traffic from
// other nodes and from the node itself to its pods leaves by the default
// route.
//
// It also removes weft's own routes (route.Protocol) inside the subnet: a
// route to a peer that held this subnet, or part of it, before this node
// leased it (the node's address or the network config changed, the daemon
// down when the peer left). The kernel appends the connected route behind
// such a route, so it would win and send the node's own pods' traffic to
// the old holder; route.Reconcile never lists the node's own subnet.
func ensureSubnetRoute(link netlink.Link, gw netip.Prefix) error {
	if err := dropPeerRoutesInside(gw.Masked()); err != nil {
		return err
	}
	dst := &net.IPNet{IP: gw.Masked().Addr().AsSlice(), Mask: net.CIDRMask(gw.Bits(), 32)}
	filter := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Table: unix.RT_TABLE_MAIN}
	routes, err := nldump.Routes(netlink.FAMILY_V4, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("listing the routes of %s: %w", link.Attrs().Name, err)
	}
	if len(routes) > 0 {
		return nil
	}
	err = netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Src: gw.Addr().AsSlice(),
		Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_KERNEL, Table: unix.RT_TABLE_MAIN})
	if err != nil {
		return fmt.Errorf("restoring the route to %s on %s: %w", dst, link.Attrs().Name, err)
	}
	return nil
}

// dropPeerRoutesInside deletes weft's routes to subnet or to a part of it.
func dropPeerRoutesInside(subnet netip.Prefix) error {
	stale, err := route.Netlink{}.List(subnet)
	if err != nil {
		return fmt.Errorf("listing weft's routes inside %s: %w", subnet, err)
	}
	for _, r := range stale {
		if err := (route.Netlink{}).Delete(r); err != nil {
			return fmt.Errorf("removing stale route %s inside the node's subnet: %w", r, err)
		}
	}
	return nil
}

func setGateway(link netlink.Link, gw netip.Prefix) error {
	addrs, err := nldump.Addrs(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", link.Attrs().Name, err)
	}
	want := &net.IPNet{IP: gw.Addr().AsSlice(), Mask: net.CIDRMask(gw.Bits(), 32)}
	for _, a := range addrs {
		if a.IPNet.String() != want.String() {
			// EADDRNOTAVAIL: a secondary the kernel removed with its
			// primary a moment ago.
			if err := netlink.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("removing stale address %s from %s: %w", a.IPNet, link.Attrs().Name, err)
			}
		}
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: want}); err != nil {
		return fmt.Errorf("adding gateway address %s to %s: %w", gw, link.Attrs().Name, err)
	}
	return nil
}

// MarkReady records on the bridge that setup is complete for file's lease.
func MarkReady(link netlink.Link, file *subnetfile.File, now time.Time) error {
	return setMark(link, mark{lease: file.Lease(), synced: now})
}

// MarkDegraded records that a sync for file's lease could not reach etcd at
// now: ADDs use the subnet file until now+DegradedRetry, then try again. The
// last complete sync stays recorded.
func MarkDegraded(link netlink.Link, file *subnetfile.File, now time.Time) error {
	m := mark{lease: file.Lease(), synced: time.Unix(0, 0), retry: now.Add(DegradedRetry)}
	current, err := netlink.LinkByIndex(link.Attrs().Index) // link may predate the last mark
	if err != nil {
		return fmt.Errorf("bridge %s: %w", link.Attrs().Name, err)
	}
	if old, ok := parseAlias(current.Attrs().Alias); ok && old.lease == m.lease {
		m.synced = old.synced
	}
	return setMark(link, m)
}

func setMark(link netlink.Link, m mark) error {
	if err := netlink.LinkSetAlias(link, m.String()); err != nil {
		return fmt.Errorf("marking bridge %s for lease %s: %w", link.Attrs().Name, m.lease, err)
	}
	return nil
}

// EnableForwarding turns on IPv4 forwarding in this namespace.
func EnableForwarding() error {
	if v, err := sysctl.Sysctl("net/ipv4/ip_forward"); err == nil && v == "1" {
		return nil
	}
	if _, err := sysctl.Sysctl("net/ipv4/ip_forward", "1"); err != nil {
		return fmt.Errorf("enabling ip_forward: %w", err)
	}
	return nil
}

// Setup is the first-use work of a node: bridge, forwarding, routes to peers
// (add and replace only; the daemon prunes) and the full rule check.
type Setup struct {
	Bridge string
	MTU    int
	File   *subnetfile.File
	Peers  []route.Peer
	Rules  masq.Rules
	IPT    masq.IPTables
	Routes route.Programmer
	// Overlay, when set, sets up an encapsulating backend (vxlan) and
	// returns the routes to peers in place of host-gw's.
	Overlay func() ([]route.Route, error)
}

// Run performs the setup and returns the bridge. Routes that cannot be
// programmed (a peer not on this segment) come back as routeErr: they must
// not stop pods on this node from starting.
func (s *Setup) Run() (link netlink.Link, routeErr, err error) {
	link, err = EnsureBridge(s.Bridge, s.File, s.MTU)
	if err != nil {
		return nil, nil, err
	}
	if err := EnableForwarding(); err != nil {
		return nil, nil, err
	}
	if _, err := masq.Ensure(s.IPT, s.Rules); err != nil {
		return nil, nil, fmt.Errorf("ensuring iptables rules: %w", err)
	}
	desired := route.HostGW(s.Peers, s.File.Lease())
	var overlayErr error
	if s.Overlay != nil {
		desired, overlayErr = s.Overlay()
	}
	if _, err := route.Reconcile(s.Routes, s.File.Network, s.File.Lease(), desired, false); err != nil {
		routeErr = fmt.Errorf("programming routes to peers: %w", err)
	}
	return link, errors.Join(overlayErr, routeErr), nil
}

// BridgeState is what the node's bridge shows of weft's setup, for an
// operator (`weft status`).
type BridgeState struct {
	Missing bool
	Addrs   []netip.Prefix // IPv4 addresses
	MAC     net.HardwareAddr
	Ports   int // links attached to it: one per pod
	// The mark (zero Lease when there is none): the lease the node was set
	// up for, its last complete sync and, after a failed one, the retry.
	Lease         netip.Prefix
	Synced, Retry time.Time
}

// Inspect reads the bridge's state; a missing bridge is no error.
func Inspect(name string) (BridgeState, error) {
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return BridgeState{Missing: true}, nil
	}
	if err != nil {
		return BridgeState{}, fmt.Errorf("bridge %s: %w", name, err)
	}
	st := BridgeState{MAC: link.Attrs().HardwareAddr}
	addrs, err := nldump.Addrs(link, netlink.FAMILY_V4)
	if err != nil {
		return BridgeState{}, fmt.Errorf("addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if p, ok := netipPrefix(a.IPNet); ok {
			st.Addrs = append(st.Addrs, p)
		}
	}
	ports, err := bridgePorts(link)
	if err != nil {
		return BridgeState{}, err
	}
	st.Ports = len(ports)
	if m, ok := parseAlias(link.Attrs().Alias); ok {
		st.Lease, st.Synced, st.Retry = m.lease, m.synced, m.retry
	}
	return st, nil
}

// bridgePorts returns the links attached to bridge: a veth per pod.
func bridgePorts(bridge netlink.Link) ([]netlink.Link, error) {
	links, err := nldump.Complete("links", netlink.LinkList)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(links, func(l netlink.Link) bool {
		return l.Attrs().MasterIndex != bridge.Attrs().Index
	}), nil
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	addr, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(addr, bits), true
}
