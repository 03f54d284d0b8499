// Command weft-ipam is a CNI IPAM plugin that hands out addresses from this
// node's leased subnet only. It works under the weft plugin and under the
// reference bridge plugin.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weft-cni/weft/pkg/cnierr"
	"github.com/weft-cni/weft/pkg/ipam"
	"github.com/weft-cni/weft/pkg/ipamcni"
	"github.com/weft-cni/weft/pkg/nodelease"
	"github.com/weft-cni/weft/pkg/podnet"
)

// callTimeout bounds one invocation (lock waits, etcd on first use).
const callTimeout = 30 * time.Second

func init() { runtime.LockOSThread() }

var log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus},
		version.All, "weft-ipam: addresses from this node's weft/flannel subnet")
}

type call struct {
	ctx    context.Context
	cfg    *ipamcni.Config
	conf   *types.NetConf
	attach ipam.Attachment
}

// run parses the request and runs fn, mapping every error to a CNI error.
func run(args *skel.CmdArgs, fn func(*call) error) error {
	cfg, conf, err := ipamcni.LoadConfig(args.StdinData)
	if err != nil {
		return cnierr.Classify(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	c := &call{ctx: ctx, cfg: cfg, conf: conf, attach: ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}}
	return cnierr.Classify(fn(c))
}

func validAttachment(a ipam.Attachment) error {
	if err := ipam.ValidateName("container ID", a.ContainerID); err != nil {
		return err
	}
	return ipam.ValidateName("interface name", a.IfName)
}

func cmdAdd(args *skel.CmdArgs) error {
	return run(args, func(c *call) error {
		if err := validAttachment(c.attach); err != nil {
			return err
		}
		if err := usableNetns(args.Netns); err != nil {
			return err
		}
		file, err := c.cfg.Subnet(c.ctx, log)
		if err != nil {
			return err
		}
		result, err := c.cfg.Add(c.ctx, file, c.attach)
		if err != nil {
			return err
		}
		return types.PrintResult(result, c.conf.CNIVersion)
	})
}

func cmdDel(args *skel.CmdArgs) error {
	return run(args, func(c *call) error {
		if err := validAttachment(c.attach); err != nil {
			return err
		}
		return c.cfg.Del(c.ctx, c.attach)
	})
}

func cmdCheck(args *skel.CmdArgs) error {
	return run(args, func(c *call) error {
		if err := validAttachment(c.attach); err != nil {
			return err
		}
		prev, err := ipamcni.PrevResult(c.conf)
		if err != nil {
			return err
		}
		return c.cfg.Check(c.ctx, c.attach, ipamcni.IPv4s(prev))
	})
}

func cmdGC(args *skel.CmdArgs) error {
	return run(args, func(c *call) error {
		freed, _, err := c.cfg.GC(c.ctx, c.conf.ValidAttachments) // no Live: weft-ipam alone cannot see the pods
		if len(freed) > 0 {
			log.Info("gc released addresses", "network", c.cfg.Network, "count", len(freed))
		}
		return err
	})
}

// cmdStatus fails with code 50 when the node has no usable lease and cannot
// get one; it acquires nothing (STATUS is informational).
func cmdStatus(args *skel.CmdArgs) error {
	return run(args, func(c *call) error {
		if err := nodelease.Usable(c.ctx, &c.cfg.Config); err != nil {
			return types.NewError(cnierr.ErrPluginNotAvailable, "no usable subnet lease", err.Error())
		}
		return c.cfg.Status()
	})
}

// usableNetns refuses, before anything is allocated, a CNI_NETNS that is not
// a network namespace or is the plugin's own: skel checks the latter only
// after ADD has run, which would leave the address allocated.
func usableNetns(path string) error {
	podNS, err := podnet.OpenNS(path)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_NETNS %q is not a usable network namespace", path), err.Error())
	}
	return podNS.Close()
}
