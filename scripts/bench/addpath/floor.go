package main

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// kernelFloor times the kernel's part of a pod's network with no plugin
// around it, in two namespaces of its own: runs times, a veth pair made in
// the pod namespace with its peer in the node namespace, the pod end up
// with an address and a default route (what every bridge plugin's ADD asks
// of the kernel, less the bridge port), then the pod end deleted (DEL).
// Medians in ms.
func kernelFloor(runs int) (add, del float64, err error) {
	var spaces []ns.NetNS
	defer func() {
		for _, n := range spaces {
			_ = n.Close()
			_ = testutils.UnmountNS(n)
		}
	}()
	for range 2 {
		n, err := testutils.NewNS()
		if err != nil {
			return 0, 0, fmt.Errorf("kernel floor: %w", err)
		}
		spaces = append(spaces, n)
	}
	var adds, dels []float64
	for range runs {
		a, d, err := vethRound(spaces[1], spaces[0])
		if err != nil {
			return 0, 0, fmt.Errorf("kernel floor: %w", err)
		}
		adds, dels = append(adds, a), append(dels, d)
	}
	return median(adds), median(dels), nil
}

// vethRound makes and configures one pair from inside podNS, then deletes
// it; it returns both times in ms.
func vethRound(podNS, nodeNS ns.NetNS) (add, del float64, err error) {
	err = podNS.Do(func(ns.NetNS) error {
		start := time.Now()
		_, podIf, err := ip.SetupVeth("eth0", 1500, "", nodeNS)
		if err != nil {
			return err
		}
		link, err := netlink.LinkByName(podIf.Name)
		if err == nil {
			err = netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 99, 0, 2), Mask: net.CIDRMask(24, 32)}})
		}
		if err == nil {
			err = netlink.LinkSetUp(link)
		}
		if err == nil {
			err = netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.IPv4(10, 99, 0, 1)})
		}
		if err != nil {
			return err
		}
		add = msSince(start)
		start = time.Now()
		if err := netlink.LinkDel(link); err != nil {
			return err
		}
		del = msSince(start)
		return nil
	})
	return add, del, err
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

// floorSummary prints the least time one call through cnitool can take with
// a plugin that is one Go process: cnitool itself, the start of an empty Go
// program, the kernel's part alone; and, beside it, half of each other
// side's traced serial p50 (issue 5's target).
func floorSummary(t *trace, calls []callRec, ss sides, emptyStart, kernelAdd, kernelDel float64, runs int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Floors of one call, this run. The kernel's part alone (`addpath` itself, two namespaces of its own, no\n")
	fmt.Fprintf(&b, "plugin, median of %d): a veth pair made in the pod namespace and the pod end up with an address and a\n", runs)
	fmt.Fprintf(&b, "default route; then the pod end deleted. With cnitool and the start of an empty Go program, that is the\n")
	fmt.Fprintf(&b, "least an ADD or DEL through cnitool can take with any plugin that is one Go process. Issue 5's\n")
	fmt.Fprintf(&b, "targets are half of the reference bridge + host-local chain's (ref, ref-nomasq) serial p50.\n\n")
	fmt.Fprintf(&b, "| floor of one call through cnitool | ADD ms | DEL ms |\n|---|---:|---:|\n")
	cnitool := map[string]float64{}
	for _, verb := range []string{"add", "del"} {
		var sum float64
		var n int
		for _, sd := range ss {
			if v, ok := collect(t, calls, sd, "serial", verb).mean(rowCNITool); ok {
				sum, n = sum+v, n+1
			}
		}
		cnitool[verb] = sum / float64(max(n, 1))
	}
	fmt.Fprintf(&b, "| cnitool itself (mean over the sides' serial calls) | %.2f | %.2f |\n", cnitool["add"], cnitool["del"])
	fmt.Fprintf(&b, "| start of an empty Go program (its VERSION call) | %.2f | %.2f |\n", emptyStart, emptyStart)
	fmt.Fprintf(&b, "| the kernel's part alone | %.2f | %.2f |\n", kernelAdd, kernelDel)
	fmt.Fprintf(&b, "| **floor: the sum** | **%.2f** | **%.2f** |\n", cnitool["add"]+emptyStart+kernelAdd, cnitool["del"]+emptyStart+kernelDel)
	for _, sd := range ss[1:] {
		add := median(collect(t, calls, sd, "serial", "add").walls) / 2
		del := median(collect(t, calls, sd, "serial", "del").walls) / 2
		fmt.Fprintf(&b, "| half of %s's serial p50 in this trace | %.2f | %.2f |\n", sd.Name, add, del)
	}
	return b.String()
}
