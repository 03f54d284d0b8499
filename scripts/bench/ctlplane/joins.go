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
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/scripts/bench/internal/stats"
)

// joinsOpts are the joins command's flags.
type joinsOpts struct {
	endpoint, prefix, gwFirst string
	n                         int
	timeout                   time.Duration
	nodes                     map[string]string // name -> namespace path
	names                     []string          // node names, in -nodes order
}

// joinResult is one lease written or deleted, timed from just before the
// etcd call, in ms.
type joinResult struct {
	put       float64
	published float64 // when our watch saw the change, from t0; NaN if it did not
	perNode   map[string]float64
	missed    []string
}

// joins measures lease to route: -n fake nodes join one at a time, each
// waited for until its route is in every watched node, then leave the same way.
func joins(args []string) error {
	o, err := parseJoinsFlags(args)
	if err != nil {
		return err
	}
	cli, ctx, done, err := session(o.endpoint, 0)
	if err != nil {
		return err
	}
	defer done()
	b, err := newJoinBench(ctx, cli, o)
	if err != nil {
		return err
	}
	joined, err := b.phase(true)
	if err != nil {
		return err
	}
	left, err := b.phase(false)
	if err != nil {
		return err
	}
	printJoins(o, joined, left)
	return nil
}

// parseJoinsFlags reads the joins command's flags and checks them.
func parseJoinsFlags(args []string) (joinsOpts, error) {
	var o joinsOpts
	fs := flag.NewFlagSet("joins", flag.ContinueOnError)
	etcdFlag(fs, &o.endpoint)
	fs.StringVar(&o.prefix, "prefix", lease.DefaultPrefix, "etcd prefix")
	nodesFlag := fs.String("nodes", "", "NAME=NETNS_PATH,… of nodes running weft daemon")
	fs.IntVar(&o.n, "n", 100, "joins (then leaves)")
	fs.StringVar(&o.gwFirst, "gw-first", "10.4.7.100", "PublicIP of the first fake node (on the nodes' segment)")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "give up on one route after this long")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.nodes, o.names, err = parseNodes(*nodesFlag); err != nil {
		return o, err
	}
	if o.n < 1 || o.n > 150 {
		return o, errors.New("-n must be 1..150")
	}
	return o, nil
}

// joinBench is the state of a joins run: the free subnets the fake nodes
// take, the etcd lease their keys are bound to, and the two watches, of
// routes in the nodes and of etcd's own events.
type joinBench struct {
	joinsOpts
	ctx     context.Context
	cli     *clientv3.Client
	subnets []netip.Prefix
	gw0     netip.Addr
	lease   clientv3.LeaseID
	events  <-chan routeEvent
	errc    <-chan error
	pub     *publishWatch
}

// newJoinBench finds -n free subnets, grants the etcd lease and starts
// watching routes in the nodes and the subnet keys in etcd.
func newJoinBench(ctx context.Context, cli *clientv3.Client, o joinsOpts) (*joinBench, error) {
	subnets, err := freeSubnets(ctx, cli, o.prefix)
	if err != nil {
		return nil, err
	}
	if len(subnets) < o.n {
		return nil, fmt.Errorf("only %d free subnets", len(subnets))
	}
	gw0, err := netip.ParseAddr(o.gwFirst)
	if err != nil {
		return nil, err
	}
	id, err := grantDay(ctx, cli)
	if err != nil {
		return nil, err
	}
	events, errc, err := watchRoutes(ctx, o.nodes)
	if err != nil {
		return nil, err
	}
	b := &joinBench{joinsOpts: o, ctx: ctx, cli: cli, subnets: subnets, gw0: gw0, lease: id, events: events, errc: errc}
	b.pub = watchPublished(ctx, cli, o.prefix)
	return b, nil
}

// freeSubnets lists the subnets of the network under prefix that no lease
// holds, from the top of the network down.
func freeSubnets(ctx context.Context, cli *clientv3.Client, prefix string) ([]netip.Prefix, error) {
	store := lease.NewStore(cli, prefix)
	cfg, err := store.NetworkConfig(ctx)
	if err != nil {
		return nil, err
	}
	held, _, err := store.List(ctx)
	if err != nil {
		return nil, err
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
	return subnets, nil
}

// publishWatch is a watch of our own on the same client: when etcd has
// committed a change and published it, which is also when the daemons'
// watches can see it.
type publishWatch struct {
	mu      sync.Mutex
	watched map[string]time.Time // "PUT key" or "DELETE key" -> arrival
}

// watchPublished starts a publishWatch of the subnet keys under prefix
// that lasts until ctx is done.
func watchPublished(ctx context.Context, cli *clientv3.Client, prefix string) *publishWatch {
	w := &publishWatch{watched: map[string]time.Time{}}
	wch := cli.Watch(ctx, prefix+"/subnets/", clientv3.WithPrefix())
	go w.record(wch)
	return w
}

// record notes when each event of wch arrived.
func (w *publishWatch) record(wch clientv3.WatchChan) {
	for resp := range wch {
		at := time.Now()
		w.mu.Lock()
		for _, ev := range resp.Events {
			w.watched[ev.Type.String()+" "+string(ev.Kv.Key)] = at
		}
		w.mu.Unlock()
	}
}

// published returns when the change to key reached our watch, waiting up
// to a second for it.
func (w *publishWatch) published(add bool, key string) (time.Time, bool) {
	k := "DELETE " + key
	if add {
		k = "PUT " + key
	}
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		w.mu.Lock()
		at, ok := w.watched[k]
		w.mu.Unlock()
		if ok {
			return at, true
		}
	}
	return time.Time{}, false
}

// phase joins (add) or removes the -n fake nodes one at a time. A phase
// stops after 5 routes that never showed up: the rest would only add 5 s
// each.
func (b *joinBench) phase(add bool) ([]joinResult, error) {
	var out []joinResult
	gw := b.gw0
	misses := 0
	for i := range b.n {
		if misses >= 5 {
			fmt.Fprintf(os.Stderr, "ctlplane joins: stopped after %d routes that did not follow within %s\n", misses, b.timeout)
			break
		}
		r, err := b.step(b.subnets[i], gw, add)
		if err != nil {
			return nil, err
		}
		if len(r.missed) > 0 {
			misses++
		}
		out = append(out, r)
		gw = gw.Next()
	}
	return out, nil
}

// step writes (add) or deletes the lease of dst, PublicIP gw, and times
// the route following in every node and the change reaching our watch.
func (b *joinBench) step(dst netip.Prefix, gw netip.Addr, add bool) (joinResult, error) {
	key := subnetKey(b.prefix, dst)
	t0 := time.Now()
	err := b.write(add, key, gw)
	put := stats.MS(time.Since(t0))
	if err != nil {
		return joinResult{}, err
	}
	got, missed, err := b.waitRoutes(t0, dst, add)
	if err != nil {
		return joinResult{}, err
	}
	pub := math.NaN()
	if at, ok := b.pub.published(add, key); ok {
		pub = stats.MS(at.Sub(t0))
	}
	return joinResult{put: put, published: pub, perNode: got, missed: missed}, nil
}

// write puts key, bound to the run's etcd lease, when add, and deletes it
// otherwise.
func (b *joinBench) write(add bool, key string, gw netip.Addr) error {
	var err error
	if add {
		_, err = b.cli.Put(b.ctx, key, attrs(gw), clientv3.WithLease(b.lease))
	} else {
		_, err = b.cli.Delete(b.ctx, key)
	}
	return err
}

// waitRoutes collects, for dst, the first matching event of every node, in
// ms from t0, until -timeout; missed lists the nodes that had none.
func (b *joinBench) waitRoutes(t0 time.Time, dst netip.Prefix, add bool) (got map[string]float64, missed []string, err error) {
	got = map[string]float64{}
	deadline := time.After(b.timeout)
	for len(got) < len(b.nodes) {
		select {
		case ev := <-b.events:
			if ev.dst == dst && ev.add == add {
				if _, seen := got[ev.node]; !seen {
					got[ev.node] = stats.MS(ev.at.Sub(t0))
				}
			}
		case err := <-b.errc:
			return nil, nil, err
		case <-deadline:
			return got, missingNodes(got, b.names), nil
		}
	}
	return got, nil, nil
}

// missingNodes lists the names that got has no time for.
func missingNodes(got map[string]float64, names []string) []string {
	var missed []string
	for _, name := range names {
		if _, ok := got[name]; !ok {
			missed = append(missed, name)
		}
	}
	return missed
}

// joinPhase is one phase's results and how the table and the summary line
// name it.
type joinPhase struct {
	key, name string
	rs        []joinResult
}

// printJoins prints the table of both phases on stdout and the summary
// line on stderr.
func printJoins(o joinsOpts, joined, left []joinResult) {
	fmt.Printf("| event | node | n | missed (> %s) | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---:|---:|---:|---:|---:|---:|\n", o.timeout)
	summary := ""
	for _, phase := range []joinPhase{
		{"join", "join: lease put → route added", joined},
		{"leave", "leave: lease deleted → route removed", left},
	} {
		summary += printJoinPhase(phase, o.names)
	}
	fmt.Fprintf(os.Stderr, "summary%s\n", summary)
}

// printJoinPhase prints a phase's rows: each node, all nodes, the etcd
// write itself and the daemons' part alone; it returns the phase's part of
// the summary line.
func printJoinPhase(phase joinPhase, names []string) string {
	for _, name := range names {
		xs, missed := nodeTimes(phase.rs, name)
		latencyRow(phase.name, name, strconv.Itoa(missed), xs)
	}
	all, allMissed := allNodesTimes(phase.rs)
	latencyRow(phase.name, "all nodes", strconv.Itoa(allMissed), all)
	latencyRow(phase.name, "(etcd write call itself)", "-", putTimes(phase.rs))
	fromEvent := fromEventTimes(phase.rs)
	latencyRow(phase.name, "all nodes, from etcd's watch event", "-", fromEvent)
	p99 := stats.Percentile(all, 99)
	if allMissed > 0 {
		p99 = math.Inf(1)
	}
	return fmt.Sprintf(" %s_event_p99=%.2f", phase.key, stats.Percentile(fromEvent, 99)) +
		fmt.Sprintf(" %s_p50=%.2f %s_p99=%.2f %s_n=%d %s_missed=%d", phase.key, stats.Percentile(all, 50), phase.key, p99,
			phase.key, len(phase.rs), phase.key, allMissed)
}

// latencyRow prints one row of the joins table: n is len(xs).
func latencyRow(event, node, missed string, xs []float64) {
	fmt.Printf("| %s | %s | %d | %s | %s |\n", event, node, len(xs), missed, quantileCells(xs))
}

// nodeTimes is node's time of every result that has one, and how many
// results lack it.
func nodeTimes(rs []joinResult, node string) (xs []float64, missed int) {
	for _, r := range rs {
		if v, ok := r.perNode[node]; ok {
			xs = append(xs, v)
		} else {
			missed++
		}
	}
	return xs, missed
}

// allNodesTimes is the slowest node's time of every result that no node
// missed, and how many results some node missed.
func allNodesTimes(rs []joinResult) (xs []float64, missed int) {
	for _, r := range rs {
		if len(r.missed) > 0 {
			missed++
			continue
		}
		xs = append(xs, max(0, slowest(r.perNode)))
	}
	return xs, missed
}

// putTimes is the time of every result's etcd call.
func putTimes(rs []joinResult) []float64 {
	puts := []float64{}
	for _, r := range rs {
		puts = append(puts, r.put)
	}
	return puts
}

// fromEventTimes is the daemons' part alone: route present in the slowest
// node minus the moment etcd's watch delivered the change to us, for every
// result that no node missed and our watch saw.
func fromEventTimes(rs []joinResult) []float64 {
	var fromEvent []float64
	for _, r := range rs {
		if len(r.missed) > 0 || math.IsNaN(r.published) {
			continue
		}
		fromEvent = append(fromEvent, slowest(r.perNode)-r.published)
	}
	return fromEvent
}

// slowest is the largest of perNode's times, -Inf if it has none.
func slowest(perNode map[string]float64) float64 {
	worst := math.Inf(-1)
	for _, v := range perNode {
		worst = max(worst, v)
	}
	return worst
}
