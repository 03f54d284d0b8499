package main

import (
	"fmt"
	"slices"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-cni/weft/pkg/cnierr"
	"github.com/weft-cni/weft/pkg/ipamcni"
	"github.com/weft-cni/weft/pkg/nodelease"
	"github.com/weft-cni/weft/pkg/podnet"
)

// cmdDel removes the pod's interface and releases its address. Anything
// already gone (netns, link, allocation) is not an error.
func cmdDel(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	if err := validArgs(args.ContainerID, args.IfName); err != nil {
		return err
	}
	ctx, cancel := callContext()
	defer cancel()
	return cnierr.Classify(unwire(ctx, conf, args))
}

// cmdCheck verifies that the pod still has what prevResult says it got.
func cmdCheck(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	if err := validArgs(args.ContainerID, args.IfName); err != nil {
		return err
	}
	prev, err := prevResult(conf)
	if err != nil {
		return err
	}
	if prev, err = own(prev, args.IfName); err != nil {
		return cnierr.Classify(err)
	}
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_NETNS %q is not a usable network namespace", args.Netns), err.Error())
	}
	defer podNS.Close()
	if err := podnet.Check(podNS, args.IfName, prev, conf.Bridge); err != nil {
		return cnierr.Classify(err)
	}
	ctx, cancel := callContext()
	defer cancel()
	if conf.ipamConf == nil {
		return cnierr.Classify(invoke.DelegateCheck(ctx, conf.IPAM.Type, args.StdinData, nil))
	}
	return cnierr.Classify(conf.ipamConf.Check(ctx, attachment(args), ipamcni.IPv4s(prev)))
}

// own is the part of a chain's result that weft's ADD made for the pod
// interface ifName: its addresses, and the routes. Another plugin's
// interface and addresses, which weft's ADD passed on, are not weft's to
// check, nor are addresses that name no interface: weft's ADD lists its
// interfaces and points each of its addresses at the pod's. A result with
// no interfaces at all (before 0.3.0) is taken whole; one that lists
// interfaces but not ifName in a pod is not weft's at all.
func own(prev *current.Result, ifName string) (*current.Result, error) {
	if len(prev.Interfaces) == 0 {
		return prev, nil
	}
	mine := func(i int) bool {
		return i >= 0 && i < len(prev.Interfaces) && prev.Interfaces[i].Name == ifName && prev.Interfaces[i].Sandbox != ""
	}
	if !slices.ContainsFunc(prev.Interfaces, func(iface *current.Interface) bool {
		return iface.Name == ifName && iface.Sandbox != ""
	}) {
		return nil, fmt.Errorf("prevResult lists no pod interface %s", ifName)
	}
	out := *prev
	out.IPs = nil
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil && mine(*ipc.Interface) {
			out.IPs = append(out.IPs, ipc)
		}
	}
	return &out, nil
}

func prevResult(conf *NetConf) (*current.Result, error) {
	prev, err := ipamcni.PrevResult(&conf.NetConf)
	if err == nil && prev == nil {
		err = types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs a prevResult", "")
	}
	return prev, err
}

// cmdGC releases every allocation not in cni.dev/valid-attachments whose
// interface is gone.
func cmdGC(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := callContext()
	defer cancel()
	if conf.ipamConf == nil {
		return cnierr.Classify(invoke.DelegateGC(ctx, conf.IPAM.Type, args.StdinData, nil))
	}
	freed, wired, err := conf.ipamConf.GC(ctx, conf.ValidAttachments)
	if len(freed) > 0 {
		log.Info("gc released addresses", "network", conf.Name, "count", len(freed))
	}
	for _, a := range wired {
		log.Warn("gc kept the address of an attachment the runtime did not list: its interface still exists; DEL it to free the address",
			"network", conf.Name, "container_id", a.ContainerID, "ifname", a.IfName)
	}
	return cnierr.Classify(err)
}

// cmdStatus fails with code 50 when the node has no usable lease and cannot
// get one, or its IPAM store cannot be read; a delegated IPAM's STATUS
// error is returned as it is.
func cmdStatus(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := callContext()
	defer cancel()
	if err := nodelease.Usable(ctx, &conf.Config); err != nil {
		return types.NewError(cnierr.ErrPluginNotAvailable, "no usable subnet lease", err.Error())
	}
	if conf.ipamConf == nil { // the spec: STATUS goes to the delegated IPAM too
		return cnierr.Classify(invoke.DelegateStatus(ctx, conf.IPAM.Type, args.StdinData, nil))
	}
	return conf.ipamConf.Status()
}
