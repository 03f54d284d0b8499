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
)

// acquire has -nodes clients, each with its own etcd connection, acquire a
// lease at the same moment with lease.Store.Acquire.
func acquire(args []string) error {
	fs := flag.NewFlagSet("acquire", flag.ContinueOnError)
	endpoint := fs.String("etcd", "http://10.4.7.12:2379", "etcd endpoint")
	prefix := fs.String("prefix", "/weftbench-acquire/network", "etcd prefix of a network of its own")
	network := fs.String("network", "10.200.0.0/16", "that network")
	nodes := fs.Int("nodes", 100, "nodes acquiring at once, each with its own etcd client")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *nodes < 1 || *nodes > 250 {
		return errors.New("-nodes must be 1..250")
	}
	raw := fmt.Sprintf(`{"Network": %q, "Backend": {"Type": "host-gw"}}`, *network)
	cfg, err := netconf.Parse([]byte(raw))
	if err != nil {
		return err
	}
	admin, err := client(*endpoint)
	if err != nil {
		return err
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := admin.Put(ctx, *prefix+"/config", raw); err != nil {
		return err
	}
	clis := make([]*clientv3.Client, *nodes)
	for i := range clis {
		if clis[i], err = client(*endpoint); err != nil {
			return err
		}
		defer clis[i].Close()
	}
	type res struct {
		el     time.Duration
		subnet netip.Prefix
		err    error
	}
	out := make([]res, *nodes)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range *nodes {
		wg.Go(func() {
			store := lease.NewStore(clis[i], *prefix)
			ip := netip.AddrFrom4([4]byte{10, 9, byte(i / 250), byte(i%250 + 1)})
			<-gate
			t0 := time.Now()
			l, err := store.Acquire(ctx, cfg, lease.Attrs{PublicIP: ip, BackendType: "host-gw"}, lease.AcquireOptions{TTL: 24 * time.Hour})
			out[i].el, out[i].err = time.Since(t0), err
			if err == nil {
				out[i].subnet = l.Subnet
			}
		})
	}
	t0 := time.Now()
	close(gate)
	wg.Wait()
	wall := time.Since(t0)
	var xs []float64
	subnets := map[netip.Prefix]int{}
	var errs []error
	for _, r := range out {
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		xs = append(xs, ms(r.el))
		subnets[r.subnet]++
	}
	dups := 0
	for _, c := range subnets {
		if c > 1 {
			dups++
		}
	}
	fmt.Printf("| %d nodes acquiring at once | |\n|---|---:|\n", *nodes)
	fmt.Printf("| all done (wall) | %.1f ms |\n| per node p50 / p99 / max | %.1f / %.1f / %.1f ms |\n| leases | %d distinct subnets, %d held twice, %d errors |\n",
		ms(wall), pct(xs, 50), pct(xs, 99), pct(xs, 100), len(subnets), dups, len(errs))
	if len(errs) > 0 {
		fmt.Fprintf(os.Stderr, "ctlplane acquire: first error: %v\n", errs[0])
	}
	fmt.Fprintf(os.Stderr, "summary wall_ms=%.1f p50_ms=%.1f p99_ms=%.1f errors=%d dups=%d\n",
		ms(wall), pct(xs, 50), pct(xs, 99), len(errs), dups)
	if dups > 0 {
		return fmt.Errorf("%d subnets held by two nodes", dups)
	}
	return nil
}
