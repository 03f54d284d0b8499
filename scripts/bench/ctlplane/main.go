// Command ctlplane measures weft's control plane against a real etcd and
// real `weft daemon` processes in namespaces. It runs inside a namespace
// that reaches etcd (the etcd host's), watches routes in node namespaces
// through netlink, and prints markdown.
//
//	ctlplane joins    lease written (Put on a warm etcd client) to the route
//	                  present in every watched node, then lease deleted to
//	                  the route gone; -n of each, one at a time
//	ctlplane start    `weft daemon` start to /readyz 200: a first start that
//	                  acquires a lease, then restarts that reuse it
//	ctlplane sync     -peers leases in a network of their own, then a daemon
//	                  started on a node: start to every route present, and
//	                  its RSS
//	ctlplane acquire  -nodes clients acquiring a lease each, all at once
//	                  (lease.Store.Acquire, as the daemon does)
//
// Every wait is bounded. Subnet keys it writes are bound to one etcd lease
// it grants; the caller tears the cluster down.
package main

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ctlplane joins|start|sync|acquire [flags]")
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "joins":
		err = joins(args)
	case "start":
		err = start(args)
	case "sync":
		err = syncPeers(args)
	case "acquire":
		err = acquire(args)
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ctlplane %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func client(endpoint string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Get(ctx, "/warm-up"); err != nil { // a warm connection
		cli.Close()
		return nil, fmt.Errorf("etcd at %s: %w", endpoint, err)
	}
	return cli, nil
}

func subnetKey(prefix string, p netip.Prefix) string {
	return fmt.Sprintf("%s/subnets/%s-%d", prefix, p.Addr(), p.Bits())
}

func attrs(gw netip.Addr) string {
	return fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":null,"BackendType":"host-gw"}`, gw)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(k, 0)]
}

// routeEvent is a route added or removed in a watched namespace.
type routeEvent struct {
	node string
	add  bool
	dst  netip.Prefix
	gw   netip.Addr
	at   time.Time
}

// watchRoutes streams IPv4 route changes in each namespace (name -> path)
// until ctx is done.
func watchRoutes(ctx context.Context, nodes map[string]string) (<-chan routeEvent, <-chan error, error) {
	out := make(chan routeEvent, 65536)
	errc := make(chan error, len(nodes))
	for name, path := range nodes {
		h, err := netns.GetFromPath(path)
		if err != nil {
			return nil, nil, fmt.Errorf("opening %s: %w", path, err)
		}
		ch := make(chan netlink.RouteUpdate, 65536)
		done := make(chan struct{})
		err = netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
			Namespace: &h, ReceiveBufferSize: 8 << 20, ReceiveBufferForceSize: true,
			ErrorCallback: func(err error) { errc <- fmt.Errorf("route events of %s: %w", name, err) },
		})
		h.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("subscribing to routes of %s: %w", name, err)
		}
		go func() { <-ctx.Done(); close(done) }()
		go func() {
			for u := range ch {
				at := time.Now()
				if u.Dst == nil || (u.Type != unix.RTM_NEWROUTE && u.Type != unix.RTM_DELROUTE) {
					continue
				}
				dst, ok := netipPrefix(u.Dst)
				if !ok {
					continue
				}
				gw, _ := netip.AddrFromSlice(u.Gw.To4())
				out <- routeEvent{node: name, add: u.Type == unix.RTM_NEWROUTE, dst: dst, gw: gw, at: at}
			}
		}()
	}
	return out, errc, nil
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a, bits), true
}

// parseNodes reads NAME=PATH,NAME=PATH.
func parseNodes(s string) (map[string]string, []string, error) {
	m := map[string]string{}
	var names []string
	for _, f := range strings.Split(s, ",") {
		name, path, ok := strings.Cut(f, "=")
		if !ok {
			return nil, nil, fmt.Errorf("node %q: want NAME=NETNS_PATH", f)
		}
		m[name] = path
		names = append(names, name)
	}
	return m, names, nil
}
