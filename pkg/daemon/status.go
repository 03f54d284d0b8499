package daemon

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weft-cni/weft/pkg/ipam"
	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/masq"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/nodelease"
	"github.com/weft-cni/weft/pkg/route"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

// statusTimeout bounds the etcd reads of `weft status`.
const statusTimeout = 5 * time.Second

// StatusStore is what `weft status` reads from etcd.
type StatusStore interface {
	NetworkConfig(ctx context.Context) (*netconf.Config, error)
	ListWithoutExpiry(ctx context.Context) ([]lease.Lease, int64, error)
	FillExpiration(ctx context.Context, l *lease.Lease) error
}

// StatusDeps are the seams `weft status` looks through.
type StatusDeps struct {
	Store    StatusStore
	Routes   route.Programmer
	IPT      masq.IPTables
	Identity func() (nodelease.Identity, error)
	// Readyz asks the running daemon whether it is ready; nil skips the check.
	Readyz func(ctx context.Context) (ready bool, detail string, err error)
	// Bridge reads the node's bridge; nil skips the check.
	Bridge func() (Bridge, error)
	// Overlay gives the routes a vxlan network wants; nil leaves them
	// unchecked.
	Overlay OverlayPlan
	// IPAM reads the IPAM store's use of the node's subnet; nil skips it.
	IPAM func(subnet netip.Prefix) (ipam.Usage, error)
	Now  time.Time
}

// Bridge is what `weft status` sees of the node's bridge.
type Bridge struct {
	Name     string
	Missing  bool
	Addrs    []netip.Prefix
	MAC      string
	MACFixed bool // the MAC derived from the gateway, which never changes
	Pods     int
	// From the bridge's mark: the lease it was set up for (invalid when
	// unmarked), the last complete sync, and a retry after a failed one.
	Lease         netip.Prefix
	Synced, Retry time.Time
}

// Check is one line of the status report.
type Check struct {
	OK     bool
	Name   string
	Detail string
}

// Report is the node's state as `weft status` prints it.
type Report struct {
	Checks []Check
}

func (r *Report) add(ok bool, name, format string, args ...any) {
	r.Checks = append(r.Checks, Check{OK: ok, Name: name, Detail: fmt.Sprintf(format, args...)})
}

// OK reports whether every check passed.
func (r *Report) OK() bool {
	return !slices.ContainsFunc(r.Checks, func(c Check) bool { return !c.OK })
}

// WriteTo prints the report, one check a line, and a verdict.
func (r *Report) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	problems := 0
	for _, c := range r.Checks {
		mark := "ok"
		if !c.OK {
			mark = "FAIL"
			problems++
		}
		fmt.Fprintf(tw, "%-4s  %s\t%s\n", mark, c.Name, c.Detail)
	}
	tw.Flush()
	if problems == 0 {
		b.WriteString("status: ok\n")
	} else {
		fmt.Fprintf(&b, "status: %d problem(s)\n", problems)
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

// Status gathers the node's state: the subnet file, the lease in etcd and
// its expiry, each peer and whether its route is present, routes left over
// from vanished leases, the iptables rules and, if asked, the daemon's
// readiness.
func Status(ctx context.Context, cfg *Config, deps StatusDeps) *Report {
	r := &Report{}
	file, err := subnetfile.Read(cfg.SubnetFile)
	if err != nil {
		r.add(false, "subnet file", "%v", err)
	} else {
		r.add(true, "subnet file", "%s: subnet %s in %s, mtu %d, ipmasq %t",
			cfg.SubnetFile, file.Subnet, file.Network, file.MTU, file.IPMasq)
	}
	id, err := deps.Identity()
	if err != nil {
		r.add(false, "node", "%v", err)
	} else {
		r.add(true, "node", "public ip %s on %s", id.PublicIP, id.Iface)
	}
	nc, own, leases := statusLease(ctx, r, cfg, deps, id, file)
	if network := nc.Network; network.IsValid() {
		self := ownSubnet(own, file)
		want := wantedRoutes(r, cfg, deps, nc, self, id, leases)
		statusRoutes(r, deps.Routes, network, self, want)
		statusRules(r, deps.IPT, network, cfg.IPMasq)
	} else {
		r.add(false, "routes", "not checked: cluster network unknown (no etcd and no subnet file)")
		r.add(false, "rules", "not checked: cluster network unknown")
	}
	statusBridge(r, deps, file)
	statusIPAM(r, cfg, deps, file)
	if deps.Readyz != nil {
		ready, detail, err := deps.Readyz(ctx)
		switch {
		case err != nil:
			r.add(false, "daemon", "%s/readyz: %v", cfg.HealthzAddr(), err)
		default:
			r.add(ready, "daemon", "%s", detail)
		}
	}
	return r
}

// statusLease checks the lease in etcd. It returns the network config (from
// etcd, else only the network of the subnet file), the node's lease and
// every lease, the last two nil when etcd cannot be read.
func statusLease(ctx context.Context, r *Report, cfg *Config, deps StatusDeps, id nodelease.Identity, file *subnetfile.File) (*netconf.Config, *lease.Lease, []lease.Lease) {
	network := &netconf.Config{}
	if file != nil {
		network.Network = file.Network
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	nc, err := deps.Store.NetworkConfig(ctx)
	if err != nil {
		r.add(false, "etcd", "reading the network config: %v", err)
		return network, nil, nil
	}
	network = nc
	// One round trip for the list and one for the node's own expiry, however
	// large the cluster.
	leases, _, err := deps.Store.ListWithoutExpiry(ctx)
	if err != nil {
		r.add(false, "etcd", "listing leases: %v", err)
		return network, nil, nil
	}
	r.add(true, "etcd", "network %s (%s), %d leases", nc.Network, nc.Backend.Type, len(leases))
	if file != nil && file.Network != nc.Network {
		r.add(false, "subnet file", "network %s, but etcd's network config says %s: the daemon applies a new config when it restarts", file.Network, nc.Network)
	}
	if !id.PublicIP.IsValid() {
		return network, nil, leases
	}
	own := lease.Own(leases, id.PublicIP, nc) // the one the daemon keeps
	if own != nil {
		if err := deps.Store.FillExpiration(ctx, own); err != nil {
			r.add(false, "lease", "%s for %s: reading its expiry: %v", own.Subnet, id.PublicIP, err)
			return network, own, leases
		}
	}
	switch {
	case own == nil:
		r.add(false, "lease", "no lease in etcd for %s", id.PublicIP)
	case own.Reservation():
		r.add(true, "lease", "%s for %s: permanent reservation", own.Subnet, id.PublicIP)
	default:
		left := own.Expiration.Sub(deps.Now).Round(time.Second)
		ok := left >= cfg.RenewMargin
		hint := ""
		if !ok {
			hint = " (not being renewed: is weft daemon running?)"
		}
		r.add(ok, "lease", "%s for %s: expires %s, in %s%s", own.Subnet, id.PublicIP,
			own.Expiration.Format(time.RFC3339), left, hint)
	}
	if own != nil && file != nil && file.Lease() != own.Subnet {
		r.add(false, "subnet file", "holds %s but etcd leases %s to this node", file.Lease(), own.Subnet)
	}

	return network, own, leases
}

func ownSubnet(own *lease.Lease, file *subnetfile.File) netip.Prefix {
	switch {
	case own != nil:
		return own.Subnet
	case file != nil:
		return file.Lease()
	}
	return netip.Prefix{}
}

// wanted is what the node's routes should be, when known (not when etcd or
// the overlay could not be read: reported already).
type wanted struct {
	known  bool
	routes []route.Route
	peers  int
	hostGW bool // routes via peers' PublicIPs, which must be on-link
}

// wantedRoutes derives the routes the daemon would program from the leases:
// peers admitted by --public-ip-cidr, host-gw routes, or the vxlan device's
// for a vxlan network.
func wantedRoutes(r *Report, cfg *Config, deps StatusDeps, nc *netconf.Config, self netip.Prefix, id nodelease.Identity, leases []lease.Lease) wanted {
	if leases == nil {
		return wanted{}
	}
	admitted := slices.DeleteFunc(slices.Clone(leases), func(l lease.Lease) bool {
		return l.Subnet == self || l.Attrs.PublicIP == id.PublicIP || !l.PublicIPIn(cfg.PublicIPCIDR)
	})
	peers := nodelease.Peers(admitted, self)
	if nc.Backend.Type != netconf.BackendVXLAN {
		return wanted{known: true, routes: route.HostGW(peers, self), peers: len(peers), hostGW: true}
	}
	if deps.Overlay == nil {
		r.add(true, "routes", "vxlan routes not checked")
		return wanted{}
	}
	routes, err := deps.Overlay(nc, self, id.PublicIP, admitted)
	if err != nil {
		r.add(false, "vxlan", "%v", err)
		return wanted{}
	}
	return wanted{known: true, routes: routes, peers: len(peers)}
}

// statusRoutes lists each peer with its route, and routes no lease explains.
// When the wanted routes are unknown it only lists the routes present.
func statusRoutes(r *Report, p route.Programmer, network, self netip.Prefix, want wanted) {
	listed, err := p.List(network)
	if err != nil {
		r.add(false, "routes", "listing routes in %s: %v", network, err)
		return
	}
	actual := slices.DeleteFunc(listed, func(rt route.Route) bool {
		return rt.Dst.Masked() == self || rt.Dst.Bits() <= network.Bits()
	})
	if !want.known {
		for _, rt := range actual {
			r.add(true, "route", "%s (peers not checked)", rt)
		}
		return
	}
	upsert, remove := route.Diff(want.routes, actual)
	r.add(true, "peers", "%d", want.peers)
	for _, w := range want.routes {
		if !slices.ContainsFunc(upsert, func(u route.Route) bool { return u.Dst == w.Dst }) {
			r.add(true, "peer", "%s: route present", w)
			continue
		}
		hint := ""
		if want.hostGW {
			hint = reachHint(p, w.Gateway)
		}
		r.add(false, "peer", "%s: route missing or wrong (%s)%s", w, describe(actual, w.Dst), hint)
	}
	for _, stale := range remove {
		r.add(false, "stale route", "%s: no lease holds this subnet", stale)
	}
}

// reachHint says when a peer's PublicIP is not on a connected segment: host-gw
// cannot route to it (flannel fails silently there).
func reachHint(p route.Programmer, gw netip.Addr) string {
	o, ok := p.(interface {
		OnLink(netip.Addr) (bool, error)
	})
	if !ok {
		return ""
	}
	if onLink, err := o.OnLink(gw); err == nil && !onLink {
		return fmt.Sprintf("; %s is not directly reachable: host-gw needs every node on one segment (use vxlan, or vxlan with DirectRouting)", gw)
	}
	return ""
}

// describe says what the kernel has for dst.
func describe(actual []route.Route, dst netip.Prefix) string {
	var have []string
	for _, rt := range actual {
		if rt.Dst.Masked() == dst {
			have = append(have, rt.String())
		}
	}
	if len(have) == 0 {
		return "none"
	}
	return "have " + strings.Join(have, ", ")
}

func statusRules(r *Report, ipt masq.IPTables, network netip.Prefix, ipMasq bool) {
	if ipt == nil {
		r.add(false, "rules", "not checked: no iptables")
		return
	}
	problems, err := masq.Check(ipt, masq.Rules{Network: network, IPMasq: ipMasq})
	switch {
	case err != nil:
		r.add(false, "rules", "checking iptables rules: %v", err)
	case len(problems) == 0:
		r.add(true, "rules", "iptables rules in place")
	default:
		for _, p := range problems {
			r.add(false, "rules", "%s", p)
		}
	}
}

// statusBridge checks the bridge against the subnet file: the gateway
// address, the fixed MAC, the lease it was set up for, and when it last
// synced with etcd.
func statusBridge(r *Report, deps StatusDeps, file *subnetfile.File) {
	if deps.Bridge == nil {
		return
	}
	b, err := deps.Bridge()
	switch {
	case err != nil:
		r.add(false, "bridge", "%v", err)
		return
	case b.Missing:
		r.add(true, "bridge", "%s not created yet (the daemon or the first ADD creates it)", b.Name)
		return
	}
	var problems []string
	if file != nil && !slices.Contains(b.Addrs, file.Subnet) {
		problems = append(problems, fmt.Sprintf("addresses %v, want the gateway %s", b.Addrs, file.Subnet))
	}
	if !b.MACFixed {
		problems = append(problems, fmt.Sprintf("MAC %s is not the fixed one: pods can lose their gateway as others come and go (the daemon or the next ADD with a sync fixes it)", b.MAC))
	}
	if file != nil && b.Lease.IsValid() && b.Lease != file.Lease() {
		problems = append(problems, fmt.Sprintf("set up for lease %s, the subnet file says %s", b.Lease, file.Lease()))
	}
	if len(problems) > 0 {
		r.add(false, "bridge", "%s: %s", b.Name, strings.Join(problems, "; "))
		return
	}
	r.add(true, "bridge", "%s: %v, MAC %s, %d pod(s), %s", b.Name, b.Addrs, b.MAC, b.Pods, syncDetail(b, deps.Now))
}

// maxGoneListed bounds the gone pods `weft status` names.
const maxGoneListed = 5

// statusIPAM reports how many addresses of the node's subnet the IPAM store
// hands out, and which holders are gone without a DEL. A subnet full of
// running pods fails: new pods get no address.
func statusIPAM(r *Report, cfg *Config, deps StatusDeps, file *subnetfile.File) {
	if deps.IPAM == nil || file == nil {
		return
	}
	u, err := deps.IPAM(file.Lease())
	if err != nil {
		r.add(false, "ipam", "%s/%s: %v", cfg.IPAMDataDir, cfg.CNINetwork, err)
		return
	}
	if u.Missing {
		r.add(true, "ipam", "no allocations in %s/%s yet (none made on this node, or --ipam-data-dir or --cni-network differ from the CNI config)",
			cfg.IPAMDataDir, cfg.CNINetwork)
		return
	}
	switch {
	case u.Full() && u.GoneUnknown != nil:
		r.add(false, "ipam", "%s full: all %d addresses held, and none is freed for pods gone without a DEL while their holders cannot be told apart (%v); new pods get no address",
			u.Subnet, u.InUse, u.GoneUnknown)
		return
	case u.Full() && len(u.Gone) == 0:
		r.add(false, "ipam", "%s full: all %d addresses held by running pods; new pods get no address", u.Subnet, u.InUse)
		return
	}
	detail := fmt.Sprintf("%d of %d addresses of %s in use (network %s)", u.InUse, u.Size, u.Subnet, cfg.CNINetwork)
	if u.GoneUnknown != nil {
		detail += fmt.Sprintf("; pods gone without a DEL not known: %v", u.GoneUnknown)
	}
	if n := len(u.Gone); n > 0 {
		names := make([]string, 0, min(n, maxGoneListed))
		for _, a := range u.Gone[:min(n, maxGoneListed)] {
			names = append(names, a.ContainerID+"/"+a.IfName)
		}
		if n > maxGoneListed {
			names = append(names, fmt.Sprintf("and %d more", n-maxGoneListed))
		}
		detail += fmt.Sprintf("; %d held by pods gone without a DEL (no veth on the node), freed when the subnet fills: %s",
			n, strings.Join(names, ", "))
	}
	r.add(true, "ipam", "%s", detail)
}

// syncDetail describes the bridge's mark.
func syncDetail(b Bridge, now time.Time) string {
	switch {
	case !b.Lease.IsValid():
		return "no sync recorded yet"
	case b.Retry.After(now):
		return "etcd was unreachable at the last sync; ADDs use the subnet file until " + b.Retry.Format(time.TimeOnly)
	case b.Synced.Unix() <= 0:
		return "never synced with etcd"
	default:
		return fmt.Sprintf("last sync with etcd %s ago", now.Sub(b.Synced).Round(time.Second))
	}
}
