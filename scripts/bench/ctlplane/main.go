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
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
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

// subnetKey is the etcd key of subnet p's lease under prefix.
func subnetKey(prefix string, p netip.Prefix) string {
	return fmt.Sprintf("%s/subnets/%s-%d", prefix, p.Addr(), p.Bits())
}

// attrs is the value of a host-gw lease whose PublicIP is gw.
func attrs(gw netip.Addr) string {
	return fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":null,"BackendType":"host-gw"}`, gw)
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
		go forwardRoutes(name, ch, out)
	}
	return out, errc, nil
}

// forwardRoutes turns the IPv4 route additions and removals among node's
// netlink updates into routeEvents on out, timestamped as they arrive.
func forwardRoutes(node string, ch <-chan netlink.RouteUpdate, out chan<- routeEvent) {
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
		out <- routeEvent{node: node, add: u.Type == unix.RTM_NEWROUTE, dst: dst, gw: gw, at: at}
	}
}

// netipPrefix converts an IPv4 destination; false if it is not IPv4.
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
