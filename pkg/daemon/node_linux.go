package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weft-cni/weft/pkg/hostnet"
	"github.com/weft-cni/weft/pkg/nodelease"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

// markRefresh is how old the bridge's ready mark may get before the daemon
// renews it. It must stay well under the plugin's peerSyncInterval (60 s by
// default), past which an ADD stops trusting the mark and syncs by itself.
const markRefresh = 20 * time.Second

// LinuxNode sets up the node as the plugin's first use does: the bridge
// holding the subnet's gateway address, and IPv4 forwarding.
type LinuxNode struct {
	Bridge string
}

var _ Node = LinuxNode{}

// Ensure implements Node. The bridge's MTU is left to the plugin, which
// knows the CNI config's mtu.
func (n LinuxNode) Ensure(file *subnetfile.File) error {
	if _, err := hostnet.EnsureBridge(n.Bridge, file, 0); err != nil {
		return err
	}
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
		return id, nil
	}
	return nodelease.Identity{}, fmt.Errorf("finding the node's interface: %w", errors.Join(errs...))
}

// NodeLock returns the Locker of the node lock beside the subnet file, the
// one the plugin takes (hostnet.LockNode).
func NodeLock(c *Config) Locker {
	dir := filepath.Dir(c.SubnetFile)
	return func(ctx context.Context) (func(), error) { return hostnet.LockNode(ctx, dir) }
}
