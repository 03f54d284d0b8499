package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weft-cni/weft/pkg/hostnet"
	"github.com/weft-cni/weft/pkg/ipam"
	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/nldump"
	"github.com/weft-cni/weft/pkg/nodelease"
	"github.com/weft-cni/weft/pkg/podnet"
	"github.com/weft-cni/weft/pkg/route"
	"github.com/weft-cni/weft/pkg/subnetfile"
	"github.com/weft-cni/weft/pkg/vxlan"
)

// markRefresh is how old the bridge's ready mark may get before the daemon
// renews it. It must stay well under the plugin's peerSyncInterval (60 s by
// default), past which an ADD stops trusting the mark and syncs by itself.
const markRefresh = 20 * time.Second

// LinuxNode sets up the node as the plugin's first use does: the bridge
// holding the subnet's gateway address, and IPv4 forwarding.
type LinuxNode struct {
	Bridge string
	Log    *slog.Logger // reports pods put back on a remade bridge; slog's default when nil
}

var _ Node = LinuxNode{}

// Inspect reads the bridge for `weft status` (StatusDeps.Bridge).
func (n LinuxNode) Inspect() (Bridge, error) {
	st, err := hostnet.Inspect(n.Bridge)
	if err != nil {
		return Bridge{}, err
	}
	b := Bridge{Name: n.Bridge, Missing: st.Missing, Addrs: st.Addrs, MAC: st.MAC.String(), Pods: st.Ports,
		Lease: st.Lease, Synced: st.Synced, Retry: st.Retry}
	for _, a := range st.Addrs {
		b.MACFixed = b.MACFixed || b.MAC == hostnet.GatewayMAC(a.Addr()).String()
	}
	return b, nil
}

// Ensure implements Node. The bridge's MTU is left to the plugin, which
// knows the CNI config's mtu.
func (n LinuxNode) Ensure(file *subnetfile.File) error {
	link, err := hostnet.EnsureBridge(n.Bridge, file, 0)
	if err != nil {
		return err
	}
	// The bridge deleted and made again: its pods back on it, each with the
	// hairpin setting its mark records. One veth that cannot be put back is
	// logged, not a reason for the node to be not ready.
	log := n.Log
	if log == nil {
		log = slog.Default()
	}
	podnet.ReattachLogged(link, log)
	return hostnet.EnableForwarding()
}

// MarkReady implements Node: it renews the bridge's mark when it is older
// than markRefresh (the alias write is a netlink event every listener sees).
func (n LinuxNode) MarkReady(file *subnetfile.File, now time.Time) error {
	link, fresh := hostnet.Ready(n.Bridge, file, markRefresh, now)
	if fresh {
		return nil
	}
	if link == nil {
		var err error
		if link, err = netlink.LinkByName(n.Bridge); err != nil {
			return fmt.Errorf("bridge %s: %w", n.Bridge, err)
		}
	}
	return hostnet.MarkReady(link, file, now)
}

// Overlay sets up the vxlan backend for the node's lease and the known
// leases and returns the routes to peers; an error wrapping vxlan.ErrDevice
// means nothing was programmed.
type Overlay func(network *netconf.Config, own *lease.Lease, leases []lease.Lease, prune bool) ([]route.Route, error)

// OverlayPlan returns, without changing anything, the routes the overlay
// wants for the node's lease self and the given leases (`weft status`).
type OverlayPlan func(network *netconf.Config, self netip.Prefix, publicIP netip.Addr, leases []lease.Lease) ([]route.Route, error)

// LinuxOverlayPlan is the OverlayPlan of the kernel: the vxlan device's
// routes as the daemon programs them.
func LinuxOverlayPlan(network *netconf.Config, self netip.Prefix, publicIP netip.Addr, leases []lease.Lease) ([]route.Route, error) {
	st, err := vxlan.Planned(vxlan.Node{Backend: network.Backend, Subnet: self, PublicIP: publicIP}, leases)
	return st.Routes, err
}

// LinuxOverlay is the Overlay of the kernel, for the node's identity.
func LinuxOverlay(id nodelease.Identity) Overlay {
	return func(network *netconf.Config, own *lease.Lease, leases []lease.Lease, prune bool) ([]route.Route, error) {
		n := vxlan.Node{Backend: network.Backend, Subnet: own.Subnet, PublicIP: own.Attrs.PublicIP, Underlay: id.Iface}
		desired, err := vxlan.Apply(n, leases, prune)
		for _, p := range desired.Unreachable {
			err = errors.Join(err, fmt.Errorf("peer %s (%s): no vxlan data in its lease and not directly reachable", p.Subnet, p.PublicIP))
		}
		return desired.Routes, err
	}
}

// ResolveIdentity finds the node's public IP and interface: the first
// --iface candidate that resolves, or the default route's interface.
func ResolveIdentity(c *Config) (nodelease.Identity, error) {
	candidates := c.Ifaces
	if len(candidates) == 0 {
		candidates = []string{""}
	}
	var errs []error
	for _, iface := range candidates {
		nc := c.Node(iface)
		id, err := nodelease.ResolveIdentity(&nc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ip, perr := netip.ParseAddr(iface); perr == nil && c.PublicIP.IsValid() && ip != c.PublicIP {
			errs = append(errs, fmt.Errorf("--iface %s with --public-ip %s: name the interface instead", iface, c.PublicIP))
			continue
		}
		if ip, perr := netip.ParseAddr(iface); perr == nil {
			// An address names the interface that holds it; none does
			// (not yet, or not any more): try the next candidate, never
			// the default route's interface under that address.
			if held, herr := HoldsAddr(nodelease.Identity{Iface: id.Iface, PublicIP: ip}); herr != nil || !held {
				errs = append(errs, fmt.Errorf("--iface %s: no interface holds it", iface))
				continue
			}
		}
		return id, nil
	}
	return nodelease.Identity{}, fmt.Errorf("finding the node's interface: %w", errors.Join(errs...))
}

// HoldsAddr reports whether id's interface still holds its public IP.
func HoldsAddr(id nodelease.Identity) (bool, error) {
	link, err := netlink.LinkByName(id.Iface)
	if err != nil {
		return false, fmt.Errorf("iface %q: %w", id.Iface, err)
	}
	ips, err := nldump.GlobalIPv4s(link)
	if err != nil {
		return false, fmt.Errorf("listing addresses of %s: %w", id.Iface, err)
	}
	return slices.Contains(ips, id.PublicIP), nil
}

// NodeLock returns the Locker of the node lock beside the subnet file, the
// one the plugin takes (hostnet.LockNode).
func NodeLock(c *Config) Locker {
	dir := filepath.Dir(c.SubnetFile)
	return func(ctx context.Context) (func(), error) { return hostnet.LockNode(ctx, dir) }
}

// IPAMUsage reads the node's weft-ipam store (read-only) and the pods'
// veth marks, for `weft status`. With an unmarked port on the bridge the
// gone holders are not listed: which address that pod holds is unknown.
func IPAMUsage(cfg *Config) func(subnet netip.Prefix) (ipam.Usage, error) {
	return func(subnet netip.Prefix) (ipam.Usage, error) {
		st, err := ipam.ReadDiskState(cfg.IPAMDataDir, cfg.CNINetwork)
		if err != nil {
			return ipam.Usage{}, err
		}
		live, liveErr := podnet.Live(cfg.Bridge)
		if liveErr != nil {
			live = nil
		}
		u, err := ipam.SubnetUsage(st, subnet, live)
		u.GoneUnknown = liveErr
		return u, err
	}
}
