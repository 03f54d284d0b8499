package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-cni/weft/pkg/netconf"
)

// syncPeers writes -peers leases under a prefix of their own, starts a daemon
// for it and measures start to every peer route present, and its RSS.
func syncPeers(args []string) error {
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	endpoint := fs.String("etcd", "http://10.4.7.12:2379", "etcd endpoint")
	prefix := fs.String("prefix", "/weftbench-sync/network", "etcd prefix of a network of its own")
	network := fs.String("network", "172.16.0.0/12", "that network")
	peers := fs.Int("peers", 1000, "peer leases")
	gwFirst := fs.String("gw-first", "10.6.1.1", "PublicIP of the first peer (on-link on the node)")
	weft := fs.String("weft", "weft", "weft binary")
	nsName := fs.String("netns", "", "node namespace name (ip netns)")
	nsPath := fs.String("netns-path", "", "its path")
	addr := fs.String("addr", "", "node address to serve /readyz on")
	publicIP := fs.String("public-ip", "", "the node's --public-ip")
	port := fs.Int("port", 2402, "healthz port")
	subnetFile := fs.String("subnet-file", "", "the node's subnet file")
	bridge := fs.String("bridge", "weftsync0", "the daemon's --bridge")
	logPath := fs.String("log", "/dev/null", "daemon log")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *peers < 1 || *peers > 4000 {
		return errors.New("-peers must be 1..4000")
	}
	cli, err := client(*endpoint)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	raw := fmt.Sprintf(`{"Network": %q, "SubnetLen": 24, "Backend": {"Type": "host-gw"}}`, *network)
	cfg, err := netconf.Parse([]byte(raw))
	if err != nil {
		return err
	}
	if _, err := cli.Put(ctx, *prefix+"/config", raw); err != nil {
		return err
	}
	grant, err := cli.Grant(ctx, 24*3600)
	if err != nil {
		return err
	}
	gw, err := netip.ParseAddr(*gwFirst)
	if err != nil {
		return err
	}
	want := map[netip.Prefix]bool{}
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		ops = ops[:0]
		return err
	}
	putStart := time.Now()
	for p := range cfg.Subnets() {
		if len(want) == *peers {
			break
		}
		want[p] = true
		ops = append(ops, clientv3.OpPut(subnetKey(*prefix, p), attrs(gw), clientv3.WithLease(grant.ID)))
		gw = gw.Next()
		if len(ops) == 100 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "ctlplane sync: %d peer leases written in %.0f ms\n", len(want), ms(time.Since(putStart)))
	netw := netip.MustParsePrefix(*network)

	events, errc, err := watchRoutes(ctx, map[string]string{"node": *nsPath})
	if err != nil {
		return err
	}
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		return err
	}
	flags := []string{"--etcd-endpoints=" + *endpoint, "--etcd-prefix=" + *prefix, "--iface=eth0",
		"--public-ip=" + *publicIP, "--subnet-file=" + *subnetFile, "--bridge=" + *bridge,
		"--healthz-ip=" + *addr, fmt.Sprintf("--healthz-port=%d", *port)}
	d, err := startDaemon(ipPath, *nsName, *weft, flags, *logPath)
	if err != nil {
		return err
	}
	defer d.stop()
	exited := exitedChan(d.cmd)
	readyc := make(chan float64, 1)
	go func() {
		el, err := waitReady(fmt.Sprintf("http://%s:%d/readyz", *addr, *port), d.t0, 60*time.Second, exited)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ctlplane sync: %v\n", err)
			readyc <- math.NaN()
			return
		}
		readyc <- ms(el)
	}()
	seen := map[netip.Prefix]bool{}
	var firstRoute, allRoutes float64
	deadline := time.After(60 * time.Second)
	for len(seen) < len(want) {
		select {
		case ev := <-events:
			if ev.add && netw.Contains(ev.dst.Addr()) && want[ev.dst] && !seen[ev.dst] {
				seen[ev.dst] = true
				if len(seen) == 1 {
					firstRoute = ms(ev.at.Sub(d.t0))
				}
				if len(seen) == len(want) {
					allRoutes = ms(ev.at.Sub(d.t0))
				}
			}
		case err := <-errc:
			return err
		case <-exited:
			return errors.New("daemon exited during the sync")
		case <-deadline:
			return fmt.Errorf("only %d of %d routes after 60s", len(seen), len(want))
		}
	}
	rssSync, _ := rss(d.cmd.Process.Pid)
	ready := <-readyc
	// The kernel's view, to be sure the events were not a partial picture.
	h, err := netns.GetFromPath(*nsPath)
	if err != nil {
		return err
	}
	nh, err := netlink.NewHandleAt(h)
	h.Close()
	if err != nil {
		return err
	}
	routes, err := nh.RouteList(nil, netlink.FAMILY_V4)
	nh.Close()
	if err != nil {
		return err
	}
	inNet := 0
	for _, r := range routes {
		if r.Dst != nil {
			if p, ok := netipPrefix(r.Dst); ok && want[p] {
				inNet++
			}
		}
	}
	time.Sleep(3 * time.Second)
	rssIdle, hwm := rss(d.cmd.Process.Pid)
	fmt.Printf("| %d peers (host-gw) | ms from daemon start |\n|---|---:|\n", len(want))
	fmt.Printf("| first peer route | %.1f |\n| all %d peer routes (%d in the kernel table after) | %.1f |\n| /readyz 200 | %.1f |\n",
		firstRoute, len(want), inNet, allRoutes, ready)
	hwm = max(hwm, rssSync, rssIdle) // the kernel updates VmHWM lazily
	fmt.Printf("\n| daemon memory with %d peers | MiB |\n|---|---:|\n| RSS when all routes were in | %.1f |\n| RSS 3 s later | %.1f |\n| peak RSS seen | %.1f |\n",
		len(want), rssSync, rssIdle, hwm)
	fmt.Fprintf(os.Stderr, "summary sync_ms=%.1f first_route_ms=%.1f ready_ms=%.1f rss_mib=%.1f hwm_mib=%.1f routes=%d\n",
		allRoutes, firstRoute, ready, rssIdle, hwm, inNet)
	return nil
}
