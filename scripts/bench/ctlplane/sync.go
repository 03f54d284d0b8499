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

	"github.com/weft-cni/weft/scripts/bench/internal/stats"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// syncOpts are the sync command's flags.
type syncOpts struct {
	endpoint, prefix, network, gwFirst string
	nsPath, publicIP, bridge           string
	peers                              int
	daemon                             *daemonOpts
}

// syncResult is what sync measures, times in ms from the daemon's start
// and memory in MiB.
type syncResult struct {
	peers                 int // peer leases written
	inKernel              int // of their routes, in the kernel table after
	firstRoute, allRoutes float64
	ready                 float64
	rssSync, rssIdle, hwm float64
}

// syncPeers writes -peers leases under a prefix of their own, starts a daemon
// for it and measures start to every peer route present, and its RSS.
func syncPeers(args []string) error {
	o, err := parseSyncFlags(args)
	if err != nil {
		return err
	}
	cli, ctx, done, err := session(o.endpoint, 0)
	if err != nil {
		return err
	}
	defer done()
	want, err := writePeers(ctx, cli, o)
	if err != nil {
		return err
	}
	r, err := measureSync(ctx, o, want)
	if err != nil {
		return err
	}
	printSync(r)
	return nil
}

// parseSyncFlags reads the sync command's flags and checks them.
func parseSyncFlags(args []string) (syncOpts, error) {
	var o syncOpts
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	etcdFlag(fs, &o.endpoint)
	fs.StringVar(&o.prefix, "prefix", "/weftbench-sync/network", "etcd prefix of a network of its own")
	fs.StringVar(&o.network, "network", "172.16.0.0/12", "that network")
	fs.IntVar(&o.peers, "peers", 1000, "peer leases")
	fs.StringVar(&o.gwFirst, "gw-first", "10.6.1.1", "PublicIP of the first peer (on-link on the node)")
	o.daemon = addDaemonFlags(fs, 2402)
	fs.StringVar(&o.nsPath, "netns-path", "", "its path")
	fs.StringVar(&o.publicIP, "public-ip", "", "the node's --public-ip")
	fs.StringVar(&o.bridge, "bridge", "weftsync0", "the daemon's --bridge")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.peers < 1 || o.peers > 4000 {
		return o, errors.New("-peers must be 1..4000")
	}
	return o, nil
}

// writePeers writes the network config under -prefix and -peers leases in
// that network, each bound to an etcd lease of its own as every node's is,
// with PublicIPs from -gw-first up; it returns their subnets.
func writePeers(ctx context.Context, cli *clientv3.Client, o syncOpts) (map[netip.Prefix]bool, error) {
	raw, cfg, err := hostGWConfig(o.network, 24)
	if err != nil {
		return nil, err
	}
	if err := putConfig(ctx, cli, o.prefix, raw); err != nil {
		return nil, err
	}
	gw, err := netip.ParseAddr(o.gwFirst)
	if err != nil {
		return nil, err
	}
	want := map[netip.Prefix]bool{}
	batch := &txnBatch{ctx: ctx, cli: cli}
	putStart := time.Now()
	for p := range cfg.Subnets() {
		if len(want) == o.peers {
			break
		}
		want[p] = true
		id, err := grantDay(ctx, cli)
		if err != nil {
			return nil, err
		}
		if err := batch.add(clientv3.OpPut(subnetKey(o.prefix, p), attrs(gw), clientv3.WithLease(id))); err != nil {
			return nil, err
		}
		gw = gw.Next()
	}
	if err := batch.flush(); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "ctlplane sync: %d peer leases written in %.0f ms\n", len(want), stats.MS(time.Since(putStart)))
	return want, nil
}

// txnBatch commits etcd ops in transactions of 100.
type txnBatch struct {
	ctx context.Context
	cli *clientv3.Client
	ops []clientv3.Op
}

// add queues op, committing the batch when it has 100.
func (b *txnBatch) add(op clientv3.Op) error {
	b.ops = append(b.ops, op)
	if len(b.ops) == 100 {
		return b.flush()
	}
	return nil
}

// flush commits the queued ops, if any, in one transaction.
func (b *txnBatch) flush() error {
	if len(b.ops) == 0 {
		return nil
	}
	_, err := b.cli.Txn(b.ctx).Then(b.ops...).Commit()
	b.ops = b.ops[:0]
	return err
}

// measureSync starts the daemon on the node for the network of its own and
// measures it: the peer routes' arrival, /readyz, the routes in the kernel
// table after, and its memory then and 3 s later. It stops the daemon.
func measureSync(ctx context.Context, o syncOpts, want map[netip.Prefix]bool) (syncResult, error) {
	r := syncResult{peers: len(want)}
	network := netip.MustParsePrefix(o.network)
	events, errc, err := watchRoutes(ctx, map[string]string{"node": o.nsPath})
	if err != nil {
		return r, err
	}
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		return r, err
	}
	d, err := startDaemon(ipPath, o.daemon, o.daemon.args(o.endpoint, &ownNetwork{o.prefix, o.publicIP, o.bridge}))
	if err != nil {
		return r, err
	}
	defer d.stop()
	exited := exitedChan(d.cmd)
	readyc := readyAsync(o.daemon.readyURL(), d, exited)
	w := peerRoutes{events: events, errc: errc, exited: exited, t0: d.t0, network: network, want: want}
	if r.firstRoute, r.allRoutes, err = w.wait(); err != nil {
		return r, err
	}
	r.rssSync, _ = rss(d.cmd.Process.Pid)
	r.ready = <-readyc
	// The kernel's view, to be sure the events were not a partial picture.
	if r.inKernel, err = countRoutes(o.nsPath, want); err != nil {
		return r, err
	}
	time.Sleep(3 * time.Second)
	r.rssIdle, r.hwm = rss(d.cmd.Process.Pid)
	r.hwm = max(r.hwm, r.rssSync, r.rssIdle) // the kernel updates VmHWM lazily
	return r, nil
}

// readyAsync waits, in the background, up to 60 s for url to answer 200
// and sends the time from the daemon's start in ms, or NaN (and says why on
// stderr) if it did not.
func readyAsync(url string, d *daemonProc, exited <-chan struct{}) <-chan float64 {
	readyc := make(chan float64, 1)
	go func() {
		el, err := waitReady(url, d.t0, 60*time.Second, exited)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ctlplane sync: %v\n", err)
			readyc <- math.NaN()
			return
		}
		readyc <- stats.MS(el)
	}()
	return readyc
}

// peerRoutes is a wait for the daemon to add a route to every wanted peer
// subnet.
type peerRoutes struct {
	events  <-chan routeEvent
	errc    <-chan error
	exited  <-chan struct{}
	t0      time.Time // the daemon's start
	network netip.Prefix
	want    map[netip.Prefix]bool
}

// wait returns the ms from t0 to the first and to the last wanted route
// added, failing after 60 s or if the daemon exits.
func (w peerRoutes) wait() (first, all float64, err error) {
	seen := map[netip.Prefix]bool{}
	deadline := time.After(60 * time.Second)
	for len(seen) < len(w.want) {
		select {
		case ev := <-w.events:
			if ev.add && w.network.Contains(ev.dst.Addr()) && w.want[ev.dst] && !seen[ev.dst] {
				seen[ev.dst] = true
				if len(seen) == 1 {
					first = stats.MS(ev.at.Sub(w.t0))
				}
				if len(seen) == len(w.want) {
					all = stats.MS(ev.at.Sub(w.t0))
				}
			}
		case err := <-w.errc:
			return 0, 0, err
		case <-w.exited:
			return 0, 0, errors.New("daemon exited during the sync")
		case <-deadline:
			return 0, 0, fmt.Errorf("only %d of %d routes after 60s", len(seen), len(w.want))
		}
	}
	return first, all, nil
}

// countRoutes counts the routes in the kernel table of the namespace at
// nsPath whose destination is one of want.
func countRoutes(nsPath string, want map[netip.Prefix]bool) (int, error) {
	routes, err := routesIn(nsPath)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range routes {
		if r.Dst != nil {
			if p, ok := netipPrefix(r.Dst); ok && want[p] {
				n++
			}
		}
	}
	return n, nil
}

// printSync prints the sync and memory tables on stdout and the summary
// line on stderr.
func printSync(r syncResult) {
	fmt.Printf("| %d peers (host-gw) | ms from daemon start |\n|---|---:|\n", r.peers)
	fmt.Printf("| first peer route | %.1f |\n| all %d peer routes (%d in the kernel table after) | %.1f |\n| /readyz 200 | %.1f |\n",
		r.firstRoute, r.peers, r.inKernel, r.allRoutes, r.ready)
	fmt.Printf("\n| daemon memory with %d peers | MiB |\n|---|---:|\n| RSS when all routes were in | %.1f |\n| RSS 3 s later | %.1f |\n| peak RSS seen | %.1f |\n",
		r.peers, r.rssSync, r.rssIdle, r.hwm)
	fmt.Fprintf(os.Stderr, "summary sync_ms=%.1f first_route_ms=%.1f ready_ms=%.1f rss_mib=%.1f hwm_mib=%.1f routes=%d\n",
		r.allRoutes, r.firstRoute, r.ready, r.rssIdle, r.hwm, r.inKernel)
}
