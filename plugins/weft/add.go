package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"

	"github.com/weft-cni/weft/pkg/cnierr"
	"github.com/weft-cni/weft/pkg/hostnet"
	"github.com/weft-cni/weft/pkg/ipam"
	"github.com/weft-cni/weft/pkg/ipamcni"
	"github.com/weft-cni/weft/pkg/masq"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/nodelease"
	"github.com/weft-cni/weft/pkg/podnet"
	"github.com/weft-cni/weft/pkg/route"
	"github.com/weft-cni/weft/pkg/subnetfile"
	"github.com/weft-cni/weft/pkg/vxlan"
)

func cmdAdd(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	if err := checkIPAMNodeSettings(conf); err != nil {
		return err
	}
	if err := validArgs(args.ContainerID, args.IfName); err != nil {
		return err
	}
	prev, err := ipamcni.PrevResult(&conf.NetConf) // weft after another plugin
	if err != nil {
		return err
	}
	if err := podnet.Markable(attachment(args), conf.Bridge); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	podNS, err := openPodNS(args.Netns, args.IfName)
	if err != nil {
		return err
	}
	defer podNS.Close()
	ctx, cancel := callContext()
	defer cancel()
	file, bridge, err := prepareNode(ctx, conf)
	if err != nil {
		return cnierr.Classify(err)
	}
	result, err := addPod(ctx, conf, args, file, bridge, podNS)
	if err != nil {
		return cnierr.Classify(err)
	}
	return types.PrintResult(chained(prev, result), conf.CNIVersion)
}

// chained is result added to prev, the result of the plugins before weft in
// a chain, which ADD must output with its own changes (the spec): prev's
// interfaces, addresses and routes first, result's address indexes moved
// past prev's interfaces, and prev's DNS unless weft has its own.
func chained(prev, result *current.Result) *current.Result {
	if prev == nil {
		return result
	}
	for _, ipc := range result.IPs {
		if ipc.Interface != nil {
			ipc.Interface = current.Int(*ipc.Interface + len(prev.Interfaces))
		}
	}
	result.Interfaces = append(slices.Clone(prev.Interfaces), result.Interfaces...)
	result.IPs = append(slices.Clone(prev.IPs), result.IPs...)
	result.Routes = append(slices.Clone(prev.Routes), result.Routes...)
	if result.DNS.IsEmpty() {
		result.DNS = prev.DNS
	}
	return result
}

// openPodNS opens the pod's namespace and refuses one where ifName exists
// already, before any state changes.
func openPodNS(path, ifName string) (ns.NetNS, error) {
	podNS, err := podnet.OpenNS(path)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_NETNS %q is not a usable network namespace", path), err.Error())
	}
	err = podNS.Do(func(ns.NetNS) error {
		if _, err := netlink.LinkByName(ifName); err == nil {
			return fmt.Errorf("interface %s already exists in %s", ifName, path)
		}
		return nil
	})
	if err != nil {
		podNS.Close()
		return nil, types.NewError(types.ErrInternal, err.Error(), "")
	}
	return podNS, nil
}

// addPod plugs the pod's veth pair in, allocates the address and wires the
// pod, undoing all of it on failure. The pair comes first: its mark tells a
// GC running meanwhile that a pod holds whatever address this one gets.
func addPod(ctx context.Context, conf *NetConf, args *skel.CmdArgs, file *subnetfile.File, bridge netlink.Link, podNS ns.NetNS) (_ *current.Result, err error) {
	mtu := conf.MTU
	if mtu == 0 {
		mtu = file.MTU
	}
	plugged, err := podnet.Plug(podNS, attachment(args), podnet.Port{Bridge: bridge, Hairpin: conf.hairpin(), MTU: mtu})
	if err != nil {
		return nil, withCleanup(err, podnet.Detach(args.Netns, args.IfName))
	}
	result, err := allocate(ctx, conf, args, file)
	if err != nil {
		return nil, withCleanup(err, podnet.Detach(args.Netns, args.IfName))
	}
	defer func() {
		if err != nil {
			err = withCleanup(err, unwire(ctx, conf, args))
		}
	}()
	if !hasDefaultRoute(result) { // a delegated IPAM may return one already
		result.Routes = append(result.Routes, &types.Route{
			Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			GW:  file.Gateway().AsSlice(),
		})
	}
	if err := plugged.Wire(ipamcni.FirstIPv4(result), result); err != nil {
		return nil, err
	}
	if !conf.DNS.IsEmpty() { // else keep what a delegated IPAM returned
		result.DNS = conf.DNS
	}
	return result, nil
}

// withCleanup is err, joined with the error of the cleanup after it if
// there was one: err alone keeps a CNI error (a delegated IPAM's code and
// details) as it is.
func withCleanup(err, cleanupErr error) error {
	if cleanupErr == nil {
		return err
	}
	return errors.Join(err, cleanupErr)
}

// hasDefaultRoute reports whether the result has an IPv4 default route.
func hasDefaultRoute(result *current.Result) bool {
	for _, r := range result.Routes {
		if ones, bits := r.Dst.Mask.Size(); ones == 0 && bits == 32 {
			return true
		}
	}
	return false
}

// prepareNode returns the node's lease and bridge. The fast path only reads:
// the subnet file, the bridge's mark and the first rules over netlink, so
// it takes no lock and concurrent ADDs do not queue for it. Anything to
// change (first use of a lease, a due sync, our rules displaced) runs under
// the node lock, so concurrent ADDs never interleave rule repairs.
func prepareNode(ctx context.Context, conf *NetConf) (*subnetfile.File, netlink.Link, error) {
	if file, err := nodelease.Current(&conf.Config); err == nil {
		link, ready := hostnet.Ready(conf.Bridge, file, conf.peerSync(), time.Now())
		// In-process reads, no iptables process. With iptables-legacy the
		// rules cannot be read so; the daemon's check repairs them.
		if ready && (masq.JumpsInPlace() || masq.RulesInLegacy()) {
			return file, link, nil
		}
	} else if errors.Is(err, fs.ErrNotExist) && len(conf.EtcdEndpoints) == 0 {
		// Nothing to do until the daemon writes the file: fail before the
		// lock makes its directory and lock file.
		return nil, nil, nodelease.NoSubnetFile(conf.SubnetFile)
	}
	unlock, err := hostnet.LockNode(ctx, filepath.Dir(conf.SubnetFile))
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	file, err := nodelease.Current(&conf.Config)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("subnet file unreadable, syncing with etcd", "error", err)
	}
	if err != nil {
		return firstUse(ctx, conf, nil)
	}
	link, ready := hostnet.Ready(conf.Bridge, file, conf.peerSync(), time.Now())
	if !ready {
		return firstUse(ctx, conf, file)
	}
	if masq.JumpsInPlace() { // repaired by an ADD that held the lock before us
		return file, link, nil
	}
	ipt, err := iptables.New()
	if err == nil {
		_, err = masq.EnsureFront(ipt, rulesFor(conf, file))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("checking iptables rules: %w", err)
	}
	return file, link, nil
}

// firstUse syncs the lease with etcd (when configured) and sets the node up.
func firstUse(ctx context.Context, conf *NetConf, file *subnetfile.File) (*subnetfile.File, netlink.Link, error) {
	var peers []route.Peer
	var overlay func() ([]route.Route, error)
	complete := true
	if len(conf.EtcdEndpoints) > 0 {
		id, err := nodelease.ResolveIdentity(&conf.Config)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", nodelease.ErrConfig, err)
		}
		st, err := nodelease.Sync(ctx, &conf.Config, id, log)
		if err != nil {
			return nil, nil, err
		}
		file, peers, complete = st.File, st.Peers, st.Degraded == nil
		overlay = vxlanOverlay(st, id, complete)
	} else if file == nil {
		return nil, nil, nodelease.NoSubnetFile(conf.SubnetFile)
	}
	ipt, err := iptables.New()
	if err != nil {
		return nil, nil, fmt.Errorf("iptables: %w", err)
	}
	setup := hostnet.Setup{Bridge: conf.Bridge, MTU: file.MTU, File: file, Peers: peers,
		Rules: rulesFor(conf, file), IPT: ipt, Routes: route.Netlink{}, Overlay: overlay}
	if conf.MTU != 0 {
		setup.MTU = conf.MTU
	}
	link, routeErr, err := setup.Run()
	if err != nil {
		return nil, nil, err
	}
	// A bridge deleted and made again: its pods back on it. One that cannot
	// be is logged, not a reason to fail this pod.
	podnet.ReattachLogged(link, log)
	if routeErr != nil {
		log.Warn("some peer routes could not be programmed", "error", routeErr)
	}
	if complete && routeErr == nil {
		err = hostnet.MarkReady(link, file, time.Now())
	} else {
		// etcd away or a peer unroutable: the next ADDs use the subnet file
		// and retry after hostnet.DegradedRetry, not each one waiting.
		err = hostnet.MarkDegraded(link, file, time.Now())
	}
	return file, link, err
}

// vxlanOverlay sets up the vxlan device and its peers' entries when the
// network's backend is vxlan; nil otherwise (and while etcd is away, when
// the peers are unknown: the device and entries of the last sync stay).
func vxlanOverlay(st *nodelease.State, id nodelease.Identity, complete bool) func() ([]route.Route, error) {
	if st.Network == nil || st.Network.Backend.Type != netconf.BackendVXLAN {
		return nil
	}
	n := vxlan.Node{Backend: st.Network.Backend, Subnet: st.File.Lease(), PublicIP: id.PublicIP, Underlay: id.Iface}
	return func() ([]route.Route, error) {
		desired, err := vxlan.Apply(n, st.Leases, complete)
		for _, p := range desired.Unreachable {
			log.Warn("peer has no vxlan data in its lease and is not directly reachable; no route to it", "subnet", p.Subnet, "public_ip", p.PublicIP)
		}
		return desired.Routes, err
	}
}

// rulesFor is the node's rules: masquerading as the conflist says, else as
// the subnet file weft wrote says (nodelease.Config.Masquerade).
func rulesFor(conf *NetConf, file *subnetfile.File) masq.Rules {
	conf.WarnMasqueradeConflict(log, file)
	return masq.Rules{Network: file.Network, IPMasq: conf.Masquerade(file)}
}

func attachment(args *skel.CmdArgs) ipam.Attachment {
	return ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
}

// allocate gets the pod's address: in-process for weft-ipam, else by
// delegating to the configured IPAM plugin.
func allocate(ctx context.Context, conf *NetConf, args *skel.CmdArgs, file *subnetfile.File) (*current.Result, error) {
	if cfg := conf.ipamConf; cfg != nil {
		return cfg.Add(ctx, file, attachment(args))
	}
	res, err := invoke.DelegateAdd(ctx, conf.IPAM.Type, args.StdinData, nil)
	if err != nil {
		return nil, err
	}
	result, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("converting IPAM result: %w", err), release(ctx, conf, args))
	}
	if len(result.IPs) == 0 {
		return nil, errors.Join(errors.New("IPAM plugin returned no address"), release(ctx, conf, args))
	}
	return result, nil
}

// unwire removes the pod's interface, then frees its address. When the
// interface cannot be removed the address stays held (the runtime retries
// DEL; GC frees it at the latest), so a pod that may still use it never
// shares it with a new one.
func unwire(ctx context.Context, conf *NetConf, args *skel.CmdArgs) error {
	if err := podnet.Detach(args.Netns, args.IfName); err != nil {
		return fmt.Errorf("%w (its address stays allocated until the interface is gone)", err)
	}
	err := release(ctx, conf, args)
	if err != nil && conf.ipamConf != nil && storeUnwritable(err) {
		// The pod's interface is gone (or its namespace is, or the runtime
		// named none). Failing would keep the runtime from removing the
		// sandbox (and its disk) for as long as the disk is full. The
		// address stays allocated, never handed out twice; GC and a full
		// subnet's reclaim free it once the store can be written again and
		// no veth carries its mark.
		log.Warn("DEL: the IPAM store cannot be written, so the pod's address stays allocated until GC or a full subnet frees it",
			"container_id", args.ContainerID, "ifname", args.IfName, "error", err)
		return nil
	}
	return err
}

// storeUnwritable tells errors of a file system that takes no writes: full,
// over quota or read-only.
func storeUnwritable(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EROFS)
}

// release frees the pod's address; unknown attachments succeed.
func release(ctx context.Context, conf *NetConf, args *skel.CmdArgs) error {
	if cfg := conf.ipamConf; cfg != nil {
		return cfg.Del(ctx, attachment(args))
	}
	return invoke.DelegateDel(ctx, conf.IPAM.Type, args.StdinData, nil)
}
