//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestReliabilityEtcdUnreachable: with etcd's link down, pods keep talking
// across nodes, a node holding a lease still starts pods (from its subnet
// file, even with a sync due on every ADD), STATUS passes there and fails
// with 50 on a node with no lease; once etcd is back the new node gets a
// subnet of its own and no lease has moved.
func TestReliabilityEtcdUnreachable(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n21, n22 := c.node(t, "node21", node21Addr, nil), c.node(t, "node22", node22Addr, nil)
	n23 := c.node(t, "node23", node23Addr, nil)
	a, b := c.tp.PodNS(t, "a"), c.tp.PodNS(t, "b")
	n21.add(t, a)
	ipB := n22.add(t, b)
	ipA2 := n21.add(t, c.tp.PodNS(t, "a2")) // node21 learns node22
	s21, s22 := n21.subnet(t), n22.subnet(t)
	before := c.leases(t)
	if err := Ping(a, ipB); err != nil {
		t.Fatalf("before the outage: %v", err)
	}

	c.etcd.Run(t, "ip", "link", "set", "eth0", "down")
	outageUp := false
	defer func() {
		if !outageUp {
			c.etcd.Run(t, "ip", "link", "set", "eth0", "up")
		}
	}()
	t.Run("existing pods keep connectivity", func(t *testing.T) {
		if err := Ping(a, ipB); err != nil {
			t.Errorf("ping %s: %v", ipB, err)
		}
		if err := Ping(b, ipA2); err != nil {
			t.Errorf("ping %s: %v", ipA2, err)
		}
	})
	t.Run("a node with a lease starts pods", func(t *testing.T) {
		start := time.Now()
		pod := c.tp.PodNS(t, "during")
		ip := n21.add(t, pod)
		t.Logf("ADD with a sync due and etcd unreachable took %s", time.Since(start).Round(time.Millisecond))
		if !s21.Contains(ip) {
			t.Errorf("got %s outside %s", ip, s21)
		}
		if err := Ping(pod, ipB); err != nil {
			t.Errorf("new pod cannot reach %s: %v", ipB, err)
		}
		// The failed sync is recorded on the bridge: the next ADDs use the
		// subnet file until the retry is due instead of each waiting.
		alias := n21.Run(t, "cat", "/sys/class/net/weft0/ifalias")
		if !strings.Contains(alias, "weft lease "+s21.String()+" synced ") || !strings.Contains(alias, " retry ") {
			t.Errorf("bridge alias after a degraded sync = %q, want the lease and a retry time", alias)
		}
		start = time.Now()
		if ip := n21.add(t, c.tp.PodNS(t, "during2")); !s21.Contains(ip) {
			t.Errorf("second ADD during the outage got %s outside %s", ip, s21)
		}
		t.Logf("the next ADD during the outage took %s", time.Since(start).Round(time.Millisecond))
	})
	t.Run("STATUS", func(t *testing.T) {
		if _, err := n21.call(t, "STATUS", "", "", n21.netconf(t, 0, nil)); err != nil {
			t.Errorf("STATUS on a node that can still start pods: %v", err)
		}
		out, err := n23.call(t, "STATUS", "", "", n23.netconf(t, 0, nil))
		var cniErr struct{ Code int }
		if err == nil || json.Unmarshal([]byte(strings.SplitN(out, "\n}", 2)[0]+"}"), &cniErr) != nil || cniErr.Code != 50 {
			t.Errorf("STATUS on a node with no lease and etcd away: %v %s, want code 50", err, out)
		}
		report, err := n21.Try(Bin(t, "weft"), "status", "--etcd-endpoints="+c.endpoint, "--iface=eth0", "--subnet-file="+n21.dir+"/subnet.env")
		if err == nil {
			t.Errorf("`weft status` passed with etcd unreachable:\n%s", report)
		}
		t.Logf("`weft status` during the outage:\n%s", report)
	})
	c.etcd.Run(t, "ip", "link", "set", "eth0", "up")
	outageUp = true
	t.Run("etcd back", func(t *testing.T) {
		ip := n23.add(t, c.tp.PodNS(t, "c"))
		s23 := n23.subnet(t)
		if s23 == s21 || s23 == s22 || !s23.Contains(ip) {
			t.Errorf("node23 got %s (pod %s) next to %s and %s", s23, ip, s21, s22)
		}
		after := c.leases(t)
		for k, v := range before {
			if after[k] != v {
				t.Errorf("lease %s changed across the outage: %q -> %q", k, v, after[k])
			}
		}
		if len(after) != 3 {
			t.Errorf("%d leases, want 3: %v", len(after), after)
		}
		n21.add(t, c.tp.PodNS(t, "after"))
	})
}

// breakNode flushes weft's chains, removes its jumps and deletes the route
// to peer, as another program might.
func breakNode(t *testing.T, n *node, peer netip.Prefix) {
	t.Helper()
	n.Run(t, "iptables", "-t", "nat", "-F", "WEFT-POSTRTG")
	n.Run(t, "iptables", "-F", "WEFT-FWD")
	n.Run(t, "iptables", "-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "weft", "-j", "WEFT-POSTRTG")
	n.Run(t, "iptables", "-D", "FORWARD", "-m", "comment", "--comment", "weft", "-j", "WEFT-FWD")
	n.Run(t, "ip", "route", "del", peer.String())
}

// repaired reports whether the node's chains, jumps and route to peer are back.
func repaired(t testing.TB, n *node, peer netip.Prefix, gw netip.Addr) (bool, error) {
	nat := n.Run(t, "iptables-save", "-t", "nat")
	filter := n.Run(t, "iptables-save", "-t", "filter")
	route := fmt.Sprintf("%s via %s dev eth0", peer, gw)
	return strings.Contains(nat, "-A POSTROUTING -m comment --comment weft -j WEFT-POSTRTG") &&
		strings.Contains(nat, "-A WEFT-POSTRTG") && strings.Contains(nat, "-j MASQUERADE") &&
		strings.Contains(filter, "-A FORWARD -m comment --comment weft -j WEFT-FWD") &&
		strings.Contains(filter, "-A WEFT-FWD") &&
		strings.Contains(Routes(t, n.Host), route), nil
}

// TestReliabilityRepair: flushed chains, removed jumps and a deleted peer
// route are put back by the next ADD (a full check when a sync is due,
// peerSyncInterval 0) and by the daemon within its resync period.
func TestReliabilityRepair(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n21, n22 := c.node(t, "node21", node21Addr, nil), c.node(t, "node22", node22Addr, nil)
	a, b := c.tp.PodNS(t, "a"), c.tp.PodNS(t, "b")
	n21.add(t, a)
	ipB := n22.add(t, b)
	n21.add(t, c.tp.PodNS(t, "a2"))
	s22 := n22.subnet(t)
	if ok, _ := repaired(t, n21, s22, n22.IP()); !ok {
		t.Fatal("node21 is not set up to begin with")
	}
	t.Run("next ADD", func(t *testing.T) {
		breakNode(t, n21, s22)
		if err := Ping(a, ipB); err == nil {
			t.Fatal("pods still reach each other with the route gone; the test breaks nothing")
		}
		n21.add(t, c.tp.PodNS(t, "repair"))
		if ok, _ := repaired(t, n21, s22, n22.IP()); !ok {
			t.Fatalf("not repaired by ADD:\n%s\n%s", n21.Run(t, "iptables-save"), Routes(t, n21.Host))
		}
		WaitFor(t, 10*time.Second, "pods reach each other after the ADD's repair", func() (bool, error) {
			return Ping(a, ipB) == nil, nil
		})
	})
	t.Run("next ADD on the fast path restores the jump", func(t *testing.T) {
		n21.writeConflist(t, map[string]any{"cniVersion": "1.1.0", "name": "weft", "plugins": []any{
			json.RawMessage(n21.netconf(t, 3600, nil))}})
		n21.Run(t, "iptables", "-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "weft", "-j", "WEFT-POSTRTG")
		n21.add(t, c.tp.PodNS(t, "fast"))
		if ok, _ := repaired(t, n21, s22, n22.IP()); !ok {
			t.Fatalf("jump not restored by a fast-path ADD:\n%s", n21.Run(t, "iptables-save", "-t", "nat"))
		}
	})
	t.Run("daemon", func(t *testing.T) {
		n21.startDaemon(t)
		n21.waitReady(t)
		breakNode(t, n21, s22)
		start := time.Now()
		WaitFor(t, 15*time.Second, "daemon repairs chains, jumps and route", func() (bool, error) {
			return repaired(t, n21, s22, n22.IP())
		})
		t.Logf("daemon repaired everything in %s (resync periods 1s)", time.Since(start).Round(10*time.Millisecond))
		WaitFor(t, 10*time.Second, "pods reach each other after the daemon's repair", func() (bool, error) {
			return Ping(a, ipB) == nil, nil
		})
	})
}
