//go:build integration

package integration

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestDaemonLeavesAHungEtcdEndpoint: the daemon is given two endpoints of
// one etcd member. Each in turn stops answering mid-watch (its packets to
// and from the node dropped, the TCP connection left open, as with a
// member whose disk stalls or a firewall that drops a flow): a lease
// written meanwhile through the other endpoint still reaches the node's
// routes, well before the daemon's periodic re-list (an hour here). One
// of the two rounds blackholes the connection the watch runs on, whichever
// it is, so the etcd client's keepalive must notice the silence and move
// the watch; without it the route never comes.
func TestDaemonLeavesAHungEtcdEndpoint(t *testing.T) {
	RequireRoot(t)
	c := &cluster{tp: NewTopology(t)}
	c.seg = c.tp.Segment("lan")
	c.etcd = c.tp.Host("etcd", c.seg, etcdAddr)
	endpoints := []netip.Addr{etcdAddr.Addr(), netip.MustParseAddr("10.4.7.13")}
	c.etcd.Run(t, "ip", "addr", "add", endpoints[1].String()+"/24", "dev", "eth0")
	var urls []string
	for _, ip := range endpoints {
		urls = append(urls, "http://"+netip.AddrPortFrom(ip, 2379).String())
	}
	p := c.etcd.Start(t, Bin(t, "weft-devetcd"), "--data-dir", t.TempDir(), "--listen-client-urls", strings.Join(urls, ","))
	c.endpoint = strings.TrimPrefix(p.WaitLine(t, 60*time.Second, "ready "), "ready ")
	c.etcdctl(t, "put", "/coreos.com/network/config", seedNetwork)

	n21 := c.node(t, "node21", node21Addr, nil)
	n21.startDaemon(t, "--relist-interval=1h")
	n21.waitReady(t)
	own := c.leases(t)
	if len(own) != 1 {
		t.Fatalf("leases after node21 joined: %v, want its own", own)
	}
	var ownValue string
	for _, v := range own {
		ownValue = v
	}

	for round, hung := range endpoints {
		rule := []string{"-p", "tcp", "-s", hung.String(), "--sport", "2379", "-j", "DROP"}
		out := []string{"-p", "tcp", "-d", hung.String(), "--dport", "2379", "-j", "DROP"}
		n21.Run(t, append([]string{"iptables", "-I", "INPUT"}, rule...)...)
		n21.Run(t, append([]string{"iptables", "-I", "OUTPUT"}, out...)...)

		// A peer joins, written through the endpoint that still answers.
		subnet := netip.MustParsePrefix(fmt.Sprintf("172.7.%d.0/24", 200+round))
		peer := netip.MustParseAddr(fmt.Sprintf("10.4.7.%d", 40+round))
		value := strings.Replace(ownValue, `"`+node21Addr.Addr().String()+`"`, `"`+peer.String()+`"`, 1)
		if value == ownValue {
			t.Fatalf("no PublicIP to replace in node21's lease %q", ownValue)
		}
		key := "/coreos.com/network/subnets/" + strings.ReplaceAll(subnet.String(), "/", "-")
		c.etcd.Run(t, "env", "ETCDCTL_API=3", "etcdctl", "--endpoints", urls[1-round], "put", key, value)

		line := fmt.Sprintf("%s via %s dev eth0", subnet, peer)
		start := time.Now()
		WaitFor(t, 60*time.Second, fmt.Sprintf("round %d (%s silent): route %q", round, hung, line), func() (bool, error) {
			return strings.Contains(Routes(t, n21.Host), line), nil
		})
		t.Logf("round %d, %s silent: route in %s", round, hung, time.Since(start).Round(100*time.Millisecond))

		n21.Run(t, append([]string{"iptables", "-D", "INPUT"}, rule...)...)
		n21.Run(t, append([]string{"iptables", "-D", "OUTPUT"}, out...)...)
	}
}
