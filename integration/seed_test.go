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
	s := newSeedScenario(t)
	t.Run("leases in flannel's shape", s.leasesInFlannelShape)
	t.Run("routes point at the other node", s.routesPointAtOtherNode)
	t.Run("pods ping across nodes", s.podsPingAcrossNodes)
	t.Run("server pod sees the client pod's own IP", s.serverSeesClientPodIP)
	t.Run("outside host sees the node IP", s.outsideSeesNodeIP)
	t.Run("pod traffic kube-proxy or portmap marked is masqueraded", s.markedTrafficMasqueraded)
	t.Run("docker's rule is overtaken at the next ADD", s.dockerRuleOvertaken)
	t.Run("no rule or route duplicated by repeated ADDs", s.noDuplicates)
	t.Run("CHECK passes, then fails once the address is removed", s.checkDetectsMissingAddress)
	t.Run("DEL twice", s.delTwice)
}

// seedScenario is TestSeedCluster's cluster: node21 and node22 with two
// pods each (and node21 a third), an outside host on the segment, and the
// pods' addresses and the nodes' subnets.
type seedScenario struct {
	c        *cluster
	n21, n22 *node
	outside  *Host
	pods     map[*node][]string    // the two pods of each node
	ips      map[string]netip.Addr // pod -> its address
	s21, s22 netip.Prefix
}

// newSeedScenario starts the cluster and adds the pods with cnitool,
// node21's second round after node22's first, so it learns node22's lease.
func newSeedScenario(t *testing.T) *seedScenario {
	c := newCluster(t, seedNetwork)
	s := &seedScenario{c: c, ips: map[string]netip.Addr{}}
	s.n21 = c.node(t, "node21", node21Addr, nil)
	s.n22 = c.node(t, "node22", node22Addr, nil)
	s.outside = c.tp.Host("outside", c.seg, outsideAddr)
	s.pods = map[*node][]string{
		s.n21: {c.tp.PodNS(t, "21a"), c.tp.PodNS(t, "21b")},
		s.n22: {c.tp.PodNS(t, "22a"), c.tp.PodNS(t, "22b")},
	}
	for _, n := range []*node{s.n21, s.n22, s.n21} { // node21 again: it learns node22's lease
		for _, pod := range s.pods[n] {
			if _, done := s.ips[pod]; done {
				continue
			}
			s.ips[pod] = n.add(t, pod)
		}
	}
	s.n21.add(t, c.tp.PodNS(t, "21c"))
	s.s21, s.s22 = s.n21.subnet(t), s.n22.subnet(t)
	return s
}

// leasesInFlannelShape checks each node's lease in etcd: flannel's key and
// its JSON value with the node's IP and the host-gw backend.
func (s *seedScenario) leasesInFlannelShape(t *testing.T) {
	leases := s.c.leases(t)
	for n, sub := range map[*node]netip.Prefix{s.n21: s.s21, s.n22: s.s22} {
		key := "/coreos.com/network/subnets/" + strings.ReplaceAll(sub.String(), "/", "-")
		var v map[string]any
		if err := json.Unmarshal([]byte(leases[key]), &v); err != nil {
			t.Fatalf("lease %s: %q: %v", key, leases[key], err)
		}
		want := map[string]any{"PublicIP": n.IP().String(), "PublicIPv6": nil, "BackendType": "host-gw"}
		if !reflect.DeepEqual(v, want) {
			t.Errorf("lease %s = %v, want %v", key, v, want)
		}
	}
}

// routesPointAtOtherNode checks each node's host-gw route to the other
// node's subnet.
func (s *seedScenario) routesPointAtOtherNode(t *testing.T) {
	for n, want := range map[*node]string{s.n21: s.s22.String() + " via 10.4.7.22 dev eth0 proto 211", s.n22: s.s21.String() + " via 10.4.7.21 dev eth0 proto 211"} {
		if routes := Routes(t, n.Host); !strings.Contains(routes, want) {
			t.Errorf("%s routes lack %q:\n%s", n, want, routes)
		}
	}
}

// podsPingAcrossNodes checks that every pod of node21 and every pod of
// node22 ping each other.
func (s *seedScenario) podsPingAcrossNodes(t *testing.T) {
	for _, from := range s.pods[s.n21] {
		for _, to := range s.pods[s.n22] {
			if err := Ping(from, s.ips[to]); err != nil {
				t.Errorf("ping %s -> %s: %v", s.ips[from], s.ips[to], err)
			}
			if err := Ping(to, s.ips[from]); err != nil {
				t.Errorf("ping %s -> %s: %v", s.ips[to], s.ips[from], err)
			}
		}
	}
}

// serverSeesClientPodIP checks that pod-to-pod traffic across nodes is not
// masqueraded: a server pod on node22 sees the client pod's own address.
func (s *seedScenario) serverSeesClientPodIP(t *testing.T) {
	server, client := s.pods[s.n22][0], s.pods[s.n21][0]
	if got := SourceIPSeen(t, server, s.ips[server], client); got != s.ips[client] {
		t.Errorf("server in %s saw %s, want the client pod's %s", s.ips[server], got, s.ips[client])
	}
}

// outsideSeesNodeIP checks that traffic from a pod to a host outside the
// cluster network is masqueraded to its node's address.
func (s *seedScenario) outsideSeesNodeIP(t *testing.T) {
	if got := SourceIPSeen(t, s.outside, s.outside.IP(), s.pods[s.n21][0]); got != s.n21.IP() {
		t.Errorf("outside host saw %s, want node IP %s", got, s.n21.IP())
	}
}

// markedTrafficMasqueraded plays kube-proxy and portmap on node21: they
// mark a connection (0x4000, 0x2000) that must be masqueraded even between
// pods (a NodePort or Service hairpin to a pod endpoint, a hostPort
// hairpin) and masquerade it in a POSTROUTING chain after ours. Marked, the
// server pod on node22 sees node21's address; unmarked again, the client
// pod's own.
func (s *seedScenario) markedTrafficMasqueraded(t *testing.T) {
	server, client := s.pods[s.n22][0], s.pods[s.n21][0]
	s.n21.Run(t, "iptables", "-t", "nat", "-N", "TEST-MARKED-MASQ")
	s.n21.Run(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-j", "TEST-MARKED-MASQ")
	t.Cleanup(func() {
		s.n21.Try("iptables", "-t", "nat", "-D", "POSTROUTING", "-j", "TEST-MARKED-MASQ")
		s.n21.Try("iptables", "-t", "nat", "-F", "TEST-MARKED-MASQ")
		s.n21.Try("iptables", "-t", "nat", "-X", "TEST-MARKED-MASQ")
	})
	for _, mark := range []string{"0x4000/0x4000", "0x2000/0x2000"} {
		s.n21.Run(t, "iptables", "-t", "nat", "-A", "TEST-MARKED-MASQ", "-m", "mark", "--mark", mark, "-j", "MASQUERADE")
		markRule := []string{"PREROUTING", "-s", s.ips[client].String(), "-d", s.ips[server].String(), "-j", "MARK", "--set-xmark", mark}
		s.n21.Run(t, append([]string{"iptables", "-t", "nat", "-I"}, markRule...)...)
		seenSourceIP(t, server, s.ips[server], client, s.n21.IP(), "a connection marked "+mark+" is masqueraded to node21")
		s.n21.Run(t, append([]string{"iptables", "-t", "nat", "-D"}, markRule...)...)
	}
	seenSourceIP(t, server, s.ips[server], client, s.ips[client], "unmarked again, the server sees the client pod's own IP")
}

// dockerRuleOvertaken inserts docker's masquerade rule for node21's subnet
// ahead of ours, checks that it does masquerade pod traffic, then checks
// that the next ADD puts our single jump first again and pod traffic keeps
// its source.
func (s *seedScenario) dockerRuleOvertaken(t *testing.T) {
	docker := []string{"-s", s.s21.String(), "!", "-o", "docker0", "-j", "MASQUERADE"}
	s.n21.Run(t, append([]string{"iptables", "-t", "nat", "-I", "POSTROUTING", "1"}, docker...)...)
	server, client := s.pods[s.n22][0], s.pods[s.n21][0]
	seenSourceIP(t, server, s.ips[server], client, s.n21.IP(), "docker's rule first masquerades pod traffic (the scenario's premise)")
	s.n21.add(t, s.c.tp.PodNS(t, "21d"))
	rules := s.n21.natRules(t)
	if len(rules) < 2 || rules[1] != "-A POSTROUTING -m comment --comment weft -j WEFT-POSTRTG" {
		t.Fatalf("our jump is not first after ADD:\n%s", strings.Join(rules, "\n"))
	}
	if n := strings.Count(strings.Join(rules, "\n"), "WEFT-POSTRTG"); n != 1 {
		t.Errorf("%d jumps to WEFT-POSTRTG, want 1", n)
	}
	// Poll: a connection can be lost while the rules change under it.
	seenSourceIP(t, server, s.ips[server], client, s.ips[client], "after ADD the server sees the client pod's own IP")
}

// noDuplicates checks that node21, after all its ADDs, holds each of our
// nat and filter rules and its route to node22's subnet exactly once.
func (s *seedScenario) noDuplicates(t *testing.T) {
	nat := s.n21.Run(t, "iptables-save", "-t", "nat")
	filter := s.n21.Run(t, "iptables-save", "-t", "filter")
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
	if n := strings.Count(Routes(t, s.n21.Host), s.s22.String()); n != 1 {
		t.Errorf("%d routes to %s", n, s.s22)
	}
}

// checkDetectsMissingAddress checks that CHECK passes for a healthy pod of
// node22, then fails, naming the address, once that address is removed
// from the pod.
func (s *seedScenario) checkDetectsMissingAddress(t *testing.T) {
	pod := s.pods[s.n22][1]
	if out, err := s.n22.cnitool(t, "check", pod); err != nil {
		t.Fatalf("CHECK of a healthy pod: %v\n%s", err, out)
	}
	RunIn(t, pod, "ip", "addr", "del", netip.PrefixFrom(s.ips[pod], s.s22.Bits()).String(), "dev", "eth0")
	out, err := s.n22.cnitool(t, "check", pod)
	if err == nil {
		t.Fatal("CHECK passed after the pod's address was removed")
	}
	if msg := out + err.Error(); !strings.Contains(msg, s.ips[pod].String()) {
		t.Errorf("CHECK error does not name the missing address %s: %s", s.ips[pod], msg)
	}
}

// delTwice checks that DEL of a node21 pod, run twice, releases exactly one
// address, removes the pod's eth0, and leaves the pod unreachable.
func (s *seedScenario) delTwice(t *testing.T) {
	pod := s.pods[s.n21][1]
	before := s.n21.allocations(t)
	s.n21.del(t, pod)
	s.n21.del(t, pod)
	if after := s.n21.allocations(t); after != before-1 {
		t.Errorf("allocations %d -> %d, want one released", before, after)
	}
	if _, err := TryIn(pod, "ip", "link", "show", "eth0"); err == nil {
		t.Error("pod still has eth0 after DEL")
	}
	if err := Ping(s.pods[s.n22][0], s.ips[pod]); err == nil {
		t.Errorf("deleted pod %s still answers", s.ips[pod])
	}
}

// TestEtcdDownFastPath: with the subnet file current, ADD makes no etcd round
// trip, so pods start while etcd is stopped. The slow path would start the
// pod too (a sync that finds etcd down degrades to the subnet file), but it
// rewrites the bridge's alias with a " retry <unix>" time; the fast path
// leaves the alias the first ADD wrote untouched, byte for byte.
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
	synced := n21.bridgeAlias(t)
	if want := "weft lease " + n21.subnet(t).String() + " synced "; !strings.HasPrefix(synced, want) || strings.Contains(synced, " retry ") {
		t.Fatalf("bridge alias after the first ADD = %q, want %q<unix> and no retry", synced, want)
	}
	etcd.Stop()
	second := n21.add(t, c.tp.PodNS(t, "b"))
	if first == second || !n21.subnet(t).Contains(second) {
		t.Fatalf("with etcd down got %s after %s, want a distinct address in %s", second, first, n21.subnet(t))
	}
	if after := n21.bridgeAlias(t); after != synced {
		t.Fatalf("bridge alias %q became %q in the ADD with etcd down: it tried etcd instead of taking the fast path", synced, after)
	}
}

// bridgeAlias is the alias of the node's bridge (weft0): the lease it was
// set up for and when it was last synced with etcd.
func (n *node) bridgeAlias(t testing.TB) string {
	t.Helper()
	return strings.TrimSuffix(n.Run(t, "cat", "/sys/class/net/weft0/ifalias"), "\n")
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
