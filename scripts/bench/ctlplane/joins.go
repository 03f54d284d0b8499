package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-cni/weft/pkg/lease"
)

// joins measures lease to route: -n fake nodes join one at a time, each
// waited for until its route is in every watched node, then leave the same way.
func joins(args []string) error {
	fs := flag.NewFlagSet("joins", flag.ContinueOnError)
	endpoint := fs.String("etcd", "http://10.4.7.12:2379", "etcd endpoint")
	prefix := fs.String("prefix", lease.DefaultPrefix, "etcd prefix")
	nodesFlag := fs.String("nodes", "", "NAME=NETNS_PATH,… of nodes running weft daemon")
	n := fs.Int("n", 100, "joins (then leaves)")
	gwFirst := fs.String("gw-first", "10.4.7.100", "PublicIP of the first fake node (on the nodes' segment)")
	timeout := fs.Duration("timeout", 5*time.Second, "give up on one route after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	nodes, names, err := parseNodes(*nodesFlag)
	if err != nil {
		return err
	}
	if *n < 1 || *n > 150 {
		return errors.New("-n must be 1..150")
	}
	cli, err := client(*endpoint)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := lease.NewStore(cli, *prefix)
	cfg, err := store.NetworkConfig(ctx)
	if err != nil {
		return err
	}
	held, _, err := store.List(ctx)
	if err != nil {
		return err
	}
	taken := map[netip.Prefix]bool{}
	for _, l := range held {
		taken[l.Subnet] = true
	}
	// Free subnets from the top of the network down, away from random picks of
	// real nodes only by luck; skipping held ones is what makes it safe.
	var subnets []netip.Prefix
	for p := range cfg.Subnets() {
		if !taken[p] {
			subnets = append(subnets, p)
		}
	}
	slices.Reverse(subnets)
	if len(subnets) < *n {
		return fmt.Errorf("only %d free subnets", len(subnets))
	}
	gw0, err := netip.ParseAddr(*gwFirst)
	if err != nil {
		return err
	}
	grant, err := cli.Grant(ctx, 24*3600)
	if err != nil {
		return err
	}
	events, errc, err := watchRoutes(ctx, nodes)
	if err != nil {
		return err
	}

	// A watch of our own on the same client: when etcd has committed a change
	// and published it, which is also when the daemons' watches can see it.
	var (
		wmu     sync.Mutex
		watched = map[string]time.Time{} // "PUT key" or "DELETE key" -> arrival
	)
	wch := cli.Watch(ctx, *prefix+"/subnets/", clientv3.WithPrefix())
	go func() {
		for resp := range wch {
			at := time.Now()
			wmu.Lock()
			for _, ev := range resp.Events {
				watched[ev.Type.String()+" "+string(ev.Kv.Key)] = at
			}
			wmu.Unlock()
		}
	}()
	// published returns when the change to key reached our watch, waiting up
	// to a second for it.
	published := func(add bool, key string) (time.Time, bool) {
		k := "DELETE " + key
		if add {
			k = "PUT " + key
		}
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			wmu.Lock()
			at, ok := watched[k]
			wmu.Unlock()
			if ok {
				return at, true
			}
		}
		return time.Time{}, false
	}

	type result struct {
		put       float64
		published float64 // when our watch saw the change, from t0; NaN if it did not
		perNode   map[string]float64
		missed    []string
	}
	// wait collects, for dst, the first matching event of every node.
	wait := func(t0 time.Time, dst netip.Prefix, add bool) (map[string]float64, []string, error) {
		got := map[string]float64{}
		deadline := time.After(*timeout)
		for len(got) < len(nodes) {
			select {
			case ev := <-events:
				if ev.dst == dst && ev.add == add {
					if _, seen := got[ev.node]; !seen {
						got[ev.node] = ms(ev.at.Sub(t0))
					}
				}
			case err := <-errc:
				return nil, nil, err
			case <-deadline:
				var missed []string
				for _, name := range names {
					if _, ok := got[name]; !ok {
						missed = append(missed, name)
					}
				}
				return got, missed, nil
			}
		}
		return got, nil, nil
	}
	// A phase stops after 5 routes that never showed up: the rest would only
	// add 5 s each.
	run := func(add bool) ([]result, error) {
		var out []result
		gw := gw0
		misses := 0
		for i := range *n {
			if misses >= 5 {
				fmt.Fprintf(os.Stderr, "ctlplane joins: stopped after %d routes that did not follow within %s\n", misses, *timeout)
				break
			}
			dst := subnets[i]
			key := subnetKey(*prefix, dst)
			t0 := time.Now()
			var err error
			if add {
				_, err = cli.Put(ctx, key, attrs(gw), clientv3.WithLease(grant.ID))
			} else {
				_, err = cli.Delete(ctx, key)
			}
			put := ms(time.Since(t0))
			if err != nil {
				return nil, err
			}
			got, missed, err := wait(t0, dst, add)
			if err != nil {
				return nil, err
			}
			if len(missed) > 0 {
				misses++
			}
			pub := math.NaN()
			if at, ok := published(add, key); ok {
				pub = ms(at.Sub(t0))
			}
			out = append(out, result{put: put, published: pub, perNode: got, missed: missed})
			gw = gw.Next()
		}
		return out, nil
	}
	joined, err := run(true)
	if err != nil {
		return err
	}
	left, err := run(false)
	if err != nil {
		return err
	}

	fmt.Printf("| event | node | n | missed (> %s) | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---:|---:|---:|---:|---:|---:|\n", *timeout)
	summary := ""
	for _, phase := range []struct {
		key, name string
		rs        []result
	}{{"join", "join: lease put → route added", joined}, {"leave", "leave: lease deleted → route removed", left}} {
		all := []float64{}
		allMissed := 0
		for _, name := range append(slices.Clone(names), "all nodes") {
			var xs []float64
			missed := 0
			for _, r := range phase.rs {
				if name == "all nodes" {
					if len(r.missed) > 0 {
						missed++
						continue
					}
					worst := 0.0
					for _, v := range r.perNode {
						worst = max(worst, v)
					}
					xs = append(xs, worst)
					continue
				}
				if v, ok := r.perNode[name]; ok {
					xs = append(xs, v)
				} else {
					missed++
				}
			}
			if name == "all nodes" {
				all, allMissed = xs, missed
			}
			fmt.Printf("| %s | %s | %d | %d | %.2f | %.2f | %.2f | %.2f |\n", phase.name, name, len(xs), missed,
				pct(xs, 50), pct(xs, 90), pct(xs, 99), pct(xs, 100))
		}
		puts := []float64{}
		for _, r := range phase.rs {
			puts = append(puts, r.put)
		}
		fmt.Printf("| %s | (etcd write call itself) | %d | - | %.2f | %.2f | %.2f | %.2f |\n", phase.name, len(puts),
			pct(puts, 50), pct(puts, 90), pct(puts, 99), pct(puts, 100))
		// The daemons' part alone: route present minus the moment etcd's
		// watch delivered the change to us.
		var fromEvent []float64
		for _, r := range phase.rs {
			if len(r.missed) > 0 || math.IsNaN(r.published) {
				continue
			}
			worst := math.Inf(-1)
			for _, v := range r.perNode {
				worst = max(worst, v)
			}
			fromEvent = append(fromEvent, worst-r.published)
		}
		fmt.Printf("| %s | all nodes, from etcd's watch event | %d | - | %.2f | %.2f | %.2f | %.2f |\n", phase.name, len(fromEvent),
			pct(fromEvent, 50), pct(fromEvent, 90), pct(fromEvent, 99), pct(fromEvent, 100))
		summary += fmt.Sprintf(" %s_event_p99=%.2f", phase.key, pct(fromEvent, 99))
		p99 := pct(all, 99)
		if allMissed > 0 {
			p99 = math.Inf(1)
		}
		summary += fmt.Sprintf(" %s_p50=%.2f %s_p99=%.2f %s_n=%d %s_missed=%d", phase.key, pct(all, 50), phase.key, p99,
			phase.key, len(phase.rs), phase.key, allMissed)
	}
	fmt.Fprintf(os.Stderr, "summary%s\n", summary)
	return nil
}
