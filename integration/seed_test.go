//go:build integration

package integration

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

var outsideAddr = netip.MustParsePrefix("10.4.7.50/24")

// TestSeedCluster is the seed scenario driven by cnitool: two nodes, two pods
// each, leases in flannel's shape, host-gw routes, pod-to-pod with real source
// IPs, masquerade to the outside, docker's rule overtaken, CHECK and DEL.
func TestSeedCluster(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n21 := c.node(t, "node21", node21Addr, nil)
	n22 := c.node(t, "node22", node22Addr, nil)
	outside := c.tp.Host("outside", c.seg, outsideAddr)

	pods := map[*node][]string{n21: {c.tp.PodNS(t, "21a"), c.tp.PodNS(t, "21b")}, n22: {c.tp.PodNS(t, "22a"), c.tp.PodNS(t, "22b")}}
	ips := map[string]netip.Addr{}
	for _, n := range []*node{n21, n22, n21} { // node21 again: it learns node22's lease
		for _, pod := range pods[n] {
			if _, done := ips[pod]; done {
				continue
			}
			ips[pod] = n.add(t, pod)
		}
	}
	n21.add(t, c.tp.PodNS(t, "21c"))
	s21, s22 := n21.subnet(t), n22.subnet(t)

	t.Run("leases in flannel's shape", func(t *testing.T) {
		leases := c.leases(t)
		for n, s := range map[*node]netip.Prefix{n21: s21, n22: s22} {
			key := "/coreos.com/network/subnets/" + strings.ReplaceAll(s.String(), "/", "-")
			var v map[string]any
			if err := json.Unmarshal([]byte(leases[key]), &v); err != nil {
				t.Fatalf("lease %s: %q: %v", key, leases[key], err)
			}
			want := map[string]any{"PublicIP": n.IP().String(), "PublicIPv6": nil, "BackendType": "host-gw"}
			if !reflect.DeepEqual(v, want) {
				t.Errorf("lease %s = %v, want %v", key, v, want)
			}
		}
	})
	t.Run("routes point at the other node", func(t *testing.T) {
		for n, want := range map[*node]string{n21: s22.String() + " via 10.4.7.22 dev eth0", n22: s21.String() + " via 10.4.7.21 dev eth0"} {
			if routes := Routes(t, n.Host); !strings.Contains(routes, want) {
				t.Errorf("%s routes lack %q:\n%s", n, want, routes)
			}
		}
	})
	t.Run("pods ping across nodes", func(t *testing.T) {
		for _, from := range pods[n21] {
			for _, to := range pods[n22] {
				if err := Ping(from, ips[to]); err != nil {
					t.Errorf("ping %s -> %s: %v", ips[from], ips[to], err)
				}
				if err := Ping(to, ips[from]); err != nil {
					t.Errorf("ping %s -> %s: %v", ips[to], ips[from], err)
				}
			}
		}
	})
	t.Run("server pod sees the client pod's own IP", func(t *testing.T) {
		server, client := pods[n22][0], pods[n21][0]
		if got := SourceIPSeen(t, server, ips[server], client); got != ips[client] {
			t.Errorf("server in %s saw %s, want the client pod's %s", ips[server], got, ips[client])
		}
	})
	t.Run("outside host sees the node IP", func(t *testing.T) {
		if got := SourceIPSeen(t, outside, outside.IP(), pods[n21][0]); got != n21.IP() {
			t.Errorf("outside host saw %s, want node IP %s", got, n21.IP())
		}
	})
	t.Run("docker's rule is overtaken at the next ADD", func(t *testing.T) {
		docker := []string{"-s", s21.String(), "!", "-o", "docker0", "-j", "MASQUERADE"}
		n21.Run(t, append([]string{"iptables", "-t", "nat", "-I", "POSTROUTING", "1"}, docker...)...)
		server, client := pods[n22][0], pods[n21][0]
		seenSourceIP(t, server, ips[server], client, n21.IP(), "docker's rule first masquerades pod traffic (the scenario's premise)")
		n21.add(t, c.tp.PodNS(t, "21d"))
		rules := n21.natRules(t)
		if len(rules) < 2 || rules[1] != "-A POSTROUTING -m comment --comment weft -j WEFT-POSTRTG" {
			t.Fatalf("our jump is not first after ADD:\n%s", strings.Join(rules, "\n"))
		}
		if n := strings.Count(strings.Join(rules, "\n"), "WEFT-POSTRTG"); n != 1 {
			t.Errorf("%d jumps to WEFT-POSTRTG, want 1", n)
		}
		// Poll: a connection can be lost while the rules change under it.
		seenSourceIP(t, server, ips[server], client, ips[client], "after ADD the server sees the client pod's own IP")
	})
	t.Run("no rule or route duplicated by repeated ADDs", func(t *testing.T) {
		nat := n21.Run(t, "iptables-save", "-t", "nat")
		filter := n21.Run(t, "iptables-save", "-t", "filter")
		for _, c := range []struct {
			table, rules, rule string
			want               int
		}{
			{"nat", nat, "-j WEFT-POSTRTG", 1}, {"nat", nat, "-j MASQUERADE --random-fully", 1}, {"nat", nat, "-j ACCEPT", 1},
			{"filter", filter, "-j WEFT-FWD", 1}, {"filter", filter, "-j ACCEPT", 2},
		} {
			if n := strings.Count(c.rules, c.rule); n != c.want {
				t.Errorf("%s: %q appears %d times, want %d:\n%s", c.table, c.rule, n, c.want, c.rules)
			}
		}
		if n := strings.Count(Routes(t, n21.Host), s22.String()); n != 1 {
			t.Errorf("%d routes to %s", n, s22)
		}
	})
	t.Run("CHECK passes, then fails once the address is removed", func(t *testing.T) {
		pod := pods[n22][1]
		if out, err := n22.cnitool(t, "check", pod); err != nil {
			t.Fatalf("CHECK of a healthy pod: %v\n%s", err, out)
		}
		RunIn(t, pod, "ip", "addr", "del", netip.PrefixFrom(ips[pod], s22.Bits()).String(), "dev", "eth0")
		out, err := n22.cnitool(t, "check", pod)
		if err == nil {
			t.Fatal("CHECK passed after the pod's address was removed")
		}
		if msg := out + err.Error(); !strings.Contains(msg, ips[pod].String()) {
			t.Errorf("CHECK error does not name the missing address %s: %s", ips[pod], msg)
		}
	})
	t.Run("DEL twice", func(t *testing.T) {
		pod := pods[n21][1]
		before := n21.allocations(t)
		n21.del(t, pod)
		n21.del(t, pod)
		if after := n21.allocations(t); after != before-1 {
			t.Errorf("allocations %d -> %d, want one released", before, after)
		}
		if _, err := TryIn(pod, "ip", "link", "show", "eth0"); err == nil {
			t.Error("pod still has eth0 after DEL")
		}
		if err := Ping(pods[n22][0], ips[pod]); err == nil {
			t.Errorf("deleted pod %s still answers", ips[pod])
		}
	})
}

// TestEtcdDownFastPath: with the subnet file current, ADD makes no etcd round
// trip, so pods start while etcd is stopped.
func TestEtcdDownFastPath(t *testing.T) {
	RequireRoot(t)
	c := &cluster{tp: NewTopology(t)}
	c.seg = c.tp.Segment("lan")
	c.etcd = c.tp.Host("etcd", c.seg, etcdAddr)
	etcd, ep := c.tp.StartEtcdDir(t, c.etcd, t.TempDir())
	c.endpoint = ep
	c.etcdctl(t, "put", "/coreos.com/network/config", seedNetwork)
	n21 := c.node(t, "node21", node21Addr, map[string]any{"peerSyncInterval": 3600})
	first := n21.add(t, c.tp.PodNS(t, "a"))
	etcd.Stop()
	second := n21.add(t, c.tp.PodNS(t, "b"))
	if first == second || !n21.subnet(t).Contains(second) {
		t.Fatalf("with etcd down got %s after %s, want a distinct address in %s", second, first, n21.subnet(t))
	}
}

// seenSourceIP polls until a fresh connection from client to a server in
// server arrives with source want.
func seenSourceIP(t *testing.T, server string, serverIP netip.Addr, client string, want netip.Addr, what string) {
	t.Helper()
	srv, addr := ServeSrcIP(t, server, serverIP)
	defer srv.Stop()
	WaitFor(t, 15*time.Second, what, func() (bool, error) {
		got, err := DialSrcIP(client, addr)
		return err == nil && got == want, nil
	})
}
