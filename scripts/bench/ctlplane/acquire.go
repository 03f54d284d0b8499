package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/scripts/bench/internal/stats"
)

// acquireOpts are the acquire command's flags.
type acquireOpts struct {
	endpoint, prefix, network string
	nodes                     int
}

// acquireResult is one client's Acquire: how long it took and the subnet
// it got, or its error.
type acquireResult struct {
	el     time.Duration
	subnet netip.Prefix
	err    error
}

// acquire has -nodes clients, each with its own etcd connection, acquire a
// lease at the same moment with lease.Store.Acquire.
func acquire(args []string) error {
	o, err := parseAcquireFlags(args)
	if err != nil {
		return err
	}
	raw, cfg, err := hostGWConfig(o.network, 0)
	if err != nil {
		return err
	}
	admin, ctx, done, err := session(o.endpoint, 5*time.Minute)
	if err != nil {
		return err
	}
	defer done()
	if err := putConfig(ctx, admin, o.prefix, raw); err != nil {
		return err
	}
	clis, closeAll, err := clients(o.endpoint, o.nodes)
	if err != nil {
		return err
	}
	defer closeAll()
	out, wall := acquireAtOnce(ctx, clis, o.prefix, cfg)
	return reportAcquire(o.nodes, out, wall)
}

// parseAcquireFlags reads the acquire command's flags and checks them.
func parseAcquireFlags(args []string) (acquireOpts, error) {
	var o acquireOpts
	fs := flag.NewFlagSet("acquire", flag.ContinueOnError)
	etcdFlag(fs, &o.endpoint)
	fs.StringVar(&o.prefix, "prefix", "/weftbench-acquire/network", "etcd prefix of a network of its own")
	fs.StringVar(&o.network, "network", "10.200.0.0/16", "that network")
	fs.IntVar(&o.nodes, "nodes", 100, "nodes acquiring at once, each with its own etcd client")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.nodes < 1 || o.nodes > 250 {
		return o, errors.New("-nodes must be 1..250")
	}
	return o, nil
}

// clients opens n warm etcd clients on endpoint. closeAll closes them, last
// opened first; on an error the ones already opened are closed.
func clients(endpoint string, n int) (clis []*clientv3.Client, closeAll func(), err error) {
	closeAll = func() {
		for i := len(clis) - 1; i >= 0; i-- {
			clis[i].Close()
		}
	}
	for range n {
		cli, err := client(endpoint)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		clis = append(clis, cli)
	}
	return clis, closeAll, nil
}

// acquireAtOnce has every client acquire a lease in the network cfg under
// prefix, all released at the same moment; it returns each one's result
// and the wall time until the last was done.
func acquireAtOnce(ctx context.Context, clis []*clientv3.Client, prefix string, cfg *netconf.Config) ([]acquireResult, time.Duration) {
	out := make([]acquireResult, len(clis))
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range clis {
		wg.Go(func() { out[i] = acquireOne(ctx, clis[i], prefix, cfg, i, gate) })
	}
	t0 := time.Now()
	close(gate)
	wg.Wait()
	return out, time.Since(t0)
}

// acquireOne is node i acquiring its lease, with PublicIP 10.9.x.y, once
// gate is closed.
func acquireOne(ctx context.Context, cli *clientv3.Client, prefix string, cfg *netconf.Config, i int, gate <-chan struct{}) acquireResult {
	store := lease.NewStore(cli, prefix)
	ip := netip.AddrFrom4([4]byte{10, 9, byte(i / 250), byte(i%250 + 1)})
	<-gate
	t0 := time.Now()
	l, err := store.Acquire(ctx, cfg, lease.Attrs{PublicIP: ip, BackendType: "host-gw"}, lease.AcquireOptions{TTL: 24 * time.Hour})
	r := acquireResult{el: time.Since(t0), err: err}
	if err == nil {
		r.subnet = l.Subnet
	}
	return r
}

// reportAcquire prints the table on stdout and the summary line on stderr;
// it fails if two nodes got the same subnet.
func reportAcquire(nodes int, out []acquireResult, wall time.Duration) error {
	var xs []float64
	subnets := map[netip.Prefix]int{}
	var errs []error
	for _, r := range out {
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		xs = append(xs, stats.MS(r.el))
		subnets[r.subnet]++
	}
	dups := 0
	for _, c := range subnets {
		if c > 1 {
			dups++
		}
	}
	fmt.Printf("| %d nodes acquiring at once | |\n|---|---:|\n", nodes)
	fmt.Printf("| all done (wall) | %.1f ms |\n| per node p50 / p99 / max | %.1f / %.1f / %.1f ms |\n| leases | %d distinct subnets, %d held twice, %d errors |\n",
		stats.MS(wall), stats.Percentile(xs, 50), stats.Percentile(xs, 99), stats.Percentile(xs, 100), len(subnets), dups, len(errs))
	if len(errs) > 0 {
		fmt.Fprintf(os.Stderr, "ctlplane acquire: first error: %v\n", errs[0])
	}
	fmt.Fprintf(os.Stderr, "summary wall_ms=%.1f p50_ms=%.1f p99_ms=%.1f errors=%d dups=%d\n",
		stats.MS(wall), stats.Percentile(xs, 50), stats.Percentile(xs, 99), len(errs), dups)
	if dups > 0 {
		return fmt.Errorf("%d subnets held by two nodes", dups)
	}
	return nil
}
