package ipamcni

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weft-cni/weft/pkg/cnierr"
	"github.com/weft-cni/weft/pkg/ipam"
	"github.com/weft-cni/weft/pkg/nodelease"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

// Subnet returns the node's subnet file, syncing with etcd only when the file
// is missing (weft-ipam under the reference bridge plugin on a fresh node).
func (c *Config) Subnet(ctx context.Context, log *slog.Logger) (*subnetfile.File, error) {
	file, err := nodelease.Current(&c.Config)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return file, err
	}
	if len(c.EtcdEndpoints) == 0 {
		return nil, nodelease.NoSubnetFile(c.SubnetFile)
	}
	id, err := nodelease.ResolveIdentity(&c.Config)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", nodelease.ErrConfig, err)
	}
	st, err := nodelease.Sync(ctx, &c.Config, id, log)
	if err != nil {
		return nil, err
	}
	return st.File, nil
}

// withPool opens the store, runs fn on a pool over subnet and closes it.
func (c *Config) withPool(subnet netip.Prefix, fn func(*ipam.Pool) error) error {
	store, err := ipam.OpenDiskStore(c.DataDir, c.Network)
	if err != nil {
		return err
	}
	pool := ipam.NewPool(store, subnet)
	pool.AdoptLive(c.Live, c.logReclaim)
	return errors.Join(fn(pool), store.Close())
}

// logReclaim logs an address freed, in a full subnet, from a pod that has
// no interface on the node any more.
func (c *Config) logReclaim(a ipam.Attachment, addr netip.Addr) {
	if c.Log != nil {
		c.Log.Warn("subnet full: freed the address of a pod that is gone (its interface no longer exists, no DEL came)",
			"address", addr, "container_id", a.ContainerID, "ifname", a.IfName)
	}
}

// Add allocates the attachment's address from file's subnet and returns the
// IPAM result: the address with the bridge as gateway, and a route to the
// cluster network through it.
func (c *Config) Add(ctx context.Context, file *subnetfile.File, a ipam.Attachment) (*current.Result, error) {
	var addr netip.Addr
	err := c.withPool(file.Lease(), func(p *ipam.Pool) (err error) {
		addr, err = p.Allocate(ctx, a)
		return err
	})
	if err != nil {
		return nil, err
	}
	gw := file.Gateway()
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		IPs: []*current.IPConfig{{
			Address: net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(file.Subnet.Bits(), 32)},
			Gateway: gw.AsSlice(),
		}},
		Routes: []*types.Route{{Dst: prefixNet(file.Network), GW: gw.AsSlice()}},
	}, nil
}

// Del releases the attachment's address; unknown attachments succeed.
func (c *Config) Del(ctx context.Context, a ipam.Attachment) error {
	return c.withPool(netip.Prefix{}, func(p *ipam.Pool) error { return p.Release(ctx, a) })
}

// Check fails unless the attachment still holds an address, and one of
// listed when that is not empty (prevResult's IPv4 addresses: in a chain,
// an earlier plugin's come first).
func (c *Config) Check(ctx context.Context, a ipam.Attachment, listed []netip.Addr) error {
	return c.withPool(netip.Prefix{}, func(p *ipam.Pool) error {
		got, ok, err := p.Lookup(ctx, a)
		switch {
		case err != nil:
			return err
		case !ok:
			return fmt.Errorf("ipam holds no address for %s/%s", a.ContainerID, a.IfName)
		case len(listed) > 0 && !slices.Contains(listed, got):
			return fmt.Errorf("ipam holds %s for %s/%s, prevResult lists %v", got, a.ContainerID, a.IfName, listed)
		}
		return nil
	})
}

// GC releases every allocation not in valid. With Live set, an allocation
// whose pod interface still exists is kept as well and returned in wired
// (ipam.Pool.GC): a runtime's short list (or `cnitool gc`, which lists
// nothing) never lets a live pod's address go to a new one.
func (c *Config) GC(ctx context.Context, valid []types.GCAttachment) (freed []netip.Addr, wired []ipam.Attachment, err error) {
	keep := make([]ipam.Attachment, 0, len(valid))
	for _, v := range valid {
		keep = append(keep, ipam.Attachment{ContainerID: v.ContainerID, IfName: v.IfName})
	}
	err = c.withPool(netip.Prefix{}, func(p *ipam.Pool) (err error) {
		freed, wired, err = p.GC(ctx, keep)
		return err
	})
	return freed, wired, err
}

// Status checks, changing nothing, that the store can be read: a state
// file that does not parse fails every ADD until it is repaired. Its error
// is the CNI error STATUS returns (code 50). A full subnet is no error:
// the runtime would report the whole node's network not ready.
func (c *Config) Status() error {
	if _, err := ipam.ReadDiskState(c.DataDir, c.Network); err != nil {
		return types.NewError(cnierr.ErrPluginNotAvailable, "ipam store unreadable", err.Error())
	}
	return nil
}

func prefixNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
