package nodelease

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"time"

	"github.com/weft-cni/weft/pkg/etcdclient"
	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/route"
	"github.com/weft-cni/weft/pkg/subnetfile"
	"github.com/weft-cni/weft/pkg/vxlan"
)

// SyncTimeout bounds one sync with etcd: a plugin call must not hang on an
// unreachable etcd. FallbackSyncTimeout bounds it when a subnet file exists
// to fall back on: a healthy etcd answers in milliseconds, and a pod should
// not wait long for a sync it can do without.
const (
	SyncTimeout         = 5 * time.Second
	FallbackSyncTimeout = 2 * time.Second
)

// ErrUnavailable marks failures that may pass if retried (etcd unreachable);
// the plugin maps it to CNI's "try again later".
var ErrUnavailable = errors.New("etcd unavailable")

// ErrNoSubnetFile marks a node with no subnet file and no etcd to get a lease
// from: its daemon has not written the file yet (or is not running), so the
// plugin maps it to CNI's "try again later" rather than a config error.
var ErrNoSubnetFile = errors.New("no subnet file yet")

// NoSubnetFile is the error of a call that found no subnet file at path and
// has no etcdEndpoints to get a lease from.
func NoSubnetFile(path string) error {
	return fmt.Errorf("%w at %s (weft daemon writes it once it holds the node's lease; is it running?) and no etcdEndpoints to get a lease from", ErrNoSubnetFile, path)
}

// Current returns the subnet file, the fast path of every ADD: no etcd round
// trip. A missing file gives an error for which errors.Is(err, fs.ErrNotExist).
func Current(c *Config) (*subnetfile.File, error) {
	return subnetfile.Read(c.SubnetFile)
}

// State is what a sync with etcd learned.
type State struct {
	File    *subnetfile.File
	Network *netconf.Config
	Self    lease.Lease
	Peers   []route.Peer  // every other node's lease
	Leases  []lease.Lease // every lease, self included (the vxlan backend's input)
	// Degraded is set when etcd could not be reached and File came from disk.
	Degraded error
}

// Sync makes sure the node holds a lease (reusing its own, found by public IP
// or by the subnet file, else acquiring a free subnet as a permanent
// reservation), writes the subnet file, and returns the peers. When etcd is
// unreachable but a subnet file exists, it returns that file with Degraded set.
func Sync(ctx context.Context, c *Config, id Identity, log *slog.Logger) (*State, error) {
	prev, err := Current(c)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("ignoring unreadable subnet file", "path", c.SubnetFile, "error", err)
	}
	st, err := syncEtcd(ctx, c, id, prev, log)
	if err == nil {
		return st, nil
	}
	err = explainTLS(c, err)
	if prev != nil && errors.Is(err, ErrUnavailable) {
		log.Warn("etcd unreachable, using the subnet file", "path", c.SubnetFile, "error", err)
		return &State{File: prev, Degraded: err}, nil
	}
	return nil, err
}

func syncEtcd(ctx context.Context, c *Config, id Identity, prev *subnetfile.File, log *slog.Logger) (*State, error) {
	timeout := SyncTimeout
	if prev != nil {
		timeout = FallbackSyncTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cli, err := etcdclient.New(c.Etcd(), nil)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	store := lease.NewStore(cli, c.EtcdPrefix)
	network, err := store.NetworkConfig(ctx)
	if err != nil {
		return nil, classify(ctx, fmt.Errorf("reading network config: %w", err))
	}
	var prefer netip.Prefix
	if prev != nil && prev.Network == network.Network {
		prefer = prev.Lease()
	}
	attrs, err := LeaseAttrs(network, id.PublicIP)
	if err != nil {
		return nil, err
	}
	own, err := store.Acquire(ctx, network, attrs, lease.AcquireOptions{Prefer: prefer})
	if err != nil {
		return nil, classify(ctx, fmt.Errorf("acquiring lease for %s: %w", id.PublicIP, err))
	}
	leases, _, err := store.ListWithoutExpiry(ctx)
	if err != nil {
		return nil, classify(ctx, fmt.Errorf("listing leases: %w", err))
	}
	leases = c.admitted(leases, own.Subnet, log)
	mtu := c.MTU
	if mtu == 0 {
		mtu = PodMTU(network, id)
	}
	c.WarnMasqueradeConflict(log, prev)
	file := subnetfile.ForLease(network.Network, own.Subnet, mtu, c.Masquerade(prev))
	// WEFT_IPMASQ is the daemon's to write: the plugin keeps the daemon's
	// setting as it is (even beside an explicit ipMasq of its own, which
	// its rules follow and which is warned about), and with no daemon's
	// setting writes its own as flannel's key only, so that an ipMasq taken
	// out of the conflist is not remembered.
	if prev != nil && prev.Weft {
		file.IPMasq, file.Weft = prev.IPMasq, true
	} else {
		file.Weft = false
	}
	if err := subnetfile.Write(c.SubnetFile, file); err != nil {
		return nil, err
	}
	return &State{File: file, Network: network, Self: *own, Peers: Peers(leases, own.Subnet), Leases: leases}, nil
}

// admitted drops peer leases whose PublicIP lies outside publicIPCIDR, with
// a warning.
func (c *Config) admitted(leases []lease.Lease, self netip.Prefix, log *slog.Logger) []lease.Lease {
	kept := leases[:0:0]
	for _, l := range leases {
		if l.Subnet != self && !l.PublicIPIn(c.publicIPCIDR) {
			log.Warn("ignoring a lease whose public IP is outside publicIPCIDR "+c.publicIPCIDR.String(), "subnet", l.Subnet, "public_ip", l.Attrs.PublicIP)
			continue
		}
		kept = append(kept, l)
	}
	return kept
}

// LeaseAttrs is the value of this node's lease for the network's backend:
// vxlan adds {"VNI":…,"VtepMAC":…} as flannel does.
func LeaseAttrs(network *netconf.Config, publicIP netip.Addr) (lease.Attrs, error) {
	attrs := lease.Attrs{PublicIP: publicIP, BackendType: network.Backend.Type}
	if network.Backend.Type == netconf.BackendVXLAN {
		data, err := vxlan.BackendData(publicIP, network.Backend.VNI)
		if err != nil {
			return lease.Attrs{}, fmt.Errorf("vxlan backend data for %s: %w", publicIP, err)
		}
		attrs.BackendData = data
	}
	return attrs, nil
}

// PodMTU is the MTU pods get on the network's backend: the underlay's for
// host-gw, less the encapsulation for vxlan.
func PodMTU(network *netconf.Config, id Identity) int {
	if network.Backend.Type == netconf.BackendVXLAN {
		return vxlan.MTU(network.Backend, id.MTU)
	}
	return id.MTU
}

// Peers turns leases into route peers, leaving out the node's own: the lease
// of self and every other lease with its PublicIP (an older lease that no
// longer fits the network config, say). A route to one of those would point
// back at this node. When self is not among leases, only self is left out.
func Peers(leases []lease.Lease, self netip.Prefix) []route.Peer {
	selfIP := ownPublicIP(leases, self)
	peers := make([]route.Peer, 0, len(leases))
	for _, l := range leases {
		if l.Subnet == self || (selfIP.IsValid() && l.Attrs.PublicIP == selfIP) {
			continue
		}
		peers = append(peers, route.Peer{Subnet: l.Subnet, PublicIP: l.Attrs.PublicIP})
	}
	return peers
}

// ownPublicIP is the PublicIP of the lease of self, if listed.
func ownPublicIP(leases []lease.Lease, self netip.Prefix) netip.Addr {
	for _, l := range leases {
		if l.Subnet == self {
			return l.Attrs.PublicIP
		}
	}
	return netip.Addr{}
}

// classify marks timeouts and connection failures as ErrUnavailable.
func classify(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// Usable reports, without changing anything, whether this node can start
// pods: its subnet file is readable, or etcd is reachable with a lease for
// it or a free subnet (the CNI STATUS check of both plugins).
func Usable(ctx context.Context, c *Config) error {
	if _, err := Current(c); err == nil {
		return nil
	}
	return Available(ctx, c)
}

// Available reports, without changing anything, whether this node holds a
// lease in etcd or could acquire one.
func Available(ctx context.Context, c *Config) error {
	id, err := ResolveIdentity(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, SyncTimeout)
	defer cancel()
	cli, err := etcdclient.New(c.Etcd(), nil)
	if err != nil {
		return err
	}
	defer cli.Close()
	store := lease.NewStore(cli, c.EtcdPrefix)
	network, err := store.NetworkConfig(ctx)
	if err != nil {
		return classify(ctx, fmt.Errorf("reading network config: %w", err))
	}
	if err := store.Acquirable(ctx, network, id.PublicIP); err != nil {
		return classify(ctx, err)
	}
	return nil
}

// explainTLS replaces an "etcd unavailable" timeout with the TLS failure
// behind it (a wrong CA, a refused client certificate), a config error that
// retrying will not cure.
func explainTLS(c *Config, err error) error {
	if !errors.Is(err, ErrUnavailable) {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if perr := etcdclient.Probe(ctx, c.Etcd()); perr != nil {
		return fmt.Errorf("%w: etcd TLS: %w", ErrConfig, perr)
	}
	return err
}
