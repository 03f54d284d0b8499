//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	routerA    = netip.MustParsePrefix("10.4.7.1/24")
	routerB    = netip.MustParsePrefix("10.4.8.1/24")
	segB       = netip.MustParsePrefix("10.4.8.0/24")
	node31Addr = netip.MustParsePrefix("10.4.8.31/24")
)

// routedCluster is the vxlan layout: etcd, node21 and node22 on segment
// "lan", node31 on segment "b" behind a router.
type routedCluster struct {
	*cluster
	b             *Segment
	n21, n22, n31 *node
}

func newRoutedCluster(t *testing.T, network string) *routedCluster {
	c := newCluster(t, network)
	b := c.tp.Segment("b")
	c.tp.Router("router", c.seg, routerA, b, routerB)
	c.etcd.AddRoute(t, segB, routerA.Addr())
	rc := &routedCluster{cluster: c, b: b}
	rc.n21 = c.node(t, "node21", node21Addr, nil)
	rc.n22 = c.node(t, "node22", node22Addr, nil)
	lan := c.seg
	c.seg = b // c.node puts hosts on c.seg
	rc.n31 = c.node(t, "node31", node31Addr, nil)
	c.seg = lan
	rc.n21.AddRoute(t, segB, routerA.Addr())
	rc.n22.AddRoute(t, segB, routerA.Addr())
	rc.n31.AddRoute(t, netip.MustParsePrefix("10.4.7.0/24"), routerB.Addr())
	return rc
}

func (rc *routedCluster) nodes() []*node { return []*node{rc.n21, rc.n22, rc.n31} }

// vtepMAC is the MAC of the node's weft.1.
func (n *node) vtepMAC(t testing.TB) string {
	t.Helper()
	for _, f := range strings.Fields(n.Run(t, "ip", "-o", "link", "show", "weft.1")) {
		if strings.Count(f, ":") == 5 && f != "ff:ff:ff:ff:ff:ff" {
			return f
		}
	}
	t.Fatalf("%s: no MAC on weft.1", n.Name)
	return ""
}

// leaseOf decodes the node's lease value from etcd.
func (rc *routedCluster) leaseOf(t testing.TB, n *node) (value string, attrs struct {
	PublicIP    string
	BackendType string
	BackendData struct {
		VNI     int
		VtepMAC string
	}
}) {
	t.Helper()
	key := "/coreos.com/network/subnets/" + strings.ReplaceAll(n.subnet(t).String(), "/", "-")
	value = rc.leases(t)[key]
	if err := json.Unmarshal([]byte(value), &attrs); err != nil {
		t.Fatalf("lease %s = %q: %v", key, value, err)
	}
	return value, attrs
}

// checkLeases: every lease is flannel's vxlan shape with the node's MAC.
func (rc *routedCluster) checkLeases(t *testing.T) {
	for _, n := range rc.nodes() {
		value, a := rc.leaseOf(t, n)
		want := fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"%s"}}`, n.IP(), n.vtepMAC(t))
		if value != want {
			t.Errorf("%s lease = %s\nwant %s", n.Name, value, want)
		}
		_ = a
	}
}

// podMesh checks that every pod reaches every other, keeping its source IP.
func podMesh(t *testing.T, pods map[string]netip.Addr) {
	for from, fromIP := range pods {
		for to, toIP := range pods {
			if from == to {
				continue
			}
			if err := Ping(from, toIP); err != nil {
				t.Errorf("ping %s -> %s: %v", fromIP, toIP, err)
			}
		}
	}
	var names []string
	for p := range pods {
		names = append(names, p)
	}
	server, client := names[0], names[1]
	if got := SourceIPSeen(t, server, pods[server], client); got != pods[client] {
		t.Errorf("server %s saw %s, want the client pod's %s", pods[server], got, pods[client])
	}
}

// dfPing pings with DF set and an ICMP payload of size bytes (IP packet of
// size+28) from the pod namespace.
func dfPing(pod string, ip netip.Addr, size int) error {
	_, err := TryIn(pod, "ping", "-c1", "-W2", "-M", "do", "-s", fmt.Sprint(size), ip.String())
	return err
}

// TestVXLAN: nodes on two segments, set up by the plugin's first use only.
func TestVXLAN(t *testing.T) {
	rc := newRoutedCluster(t, `{"Network":"172.7.0.0/16","Backend":{"Type":"vxlan"}}`)
	pods := map[string]netip.Addr{}
	byNode := map[*node]string{}
	for round := range 2 { // the second round's first use sees every peer
		for _, n := range rc.nodes() {
			pod := rc.tp.PodNS(t, fmt.Sprintf("%s-%d", n.Name, round))
			ip := n.add(t, pod)
			if round == 1 {
				pods[pod], byNode[n] = ip, pod
			}
		}
	}
	t.Run("leases as flannel writes them", rc.checkLeases)
	t.Run("device and MTU", func(t *testing.T) {
		for _, n := range rc.nodes() {
			link := n.Run(t, "ip", "-d", "link", "show", "weft.1")
			for _, want := range []string{"mtu 1450", "vxlan id 1", "dstport 8472", "nolearning"} {
				if !strings.Contains(link, want) {
					t.Errorf("%s weft.1 lacks %q:\n%s", n.Name, want, link)
				}
			}
			if addr := n.Run(t, "ip", "-4", "-o", "addr", "show", "weft.1"); !strings.Contains(addr, n.subnet(t).Addr().String()+"/32") {
				t.Errorf("%s weft.1 addresses: %s", n.Name, addr)
			}
			if env := n.Run(t, "cat", n.dir+"/subnet.env"); !strings.Contains(env, "FLANNEL_MTU=1450") {
				t.Errorf("%s subnet file:\n%s", n.Name, env)
			}
		}
	})
	t.Run("per-peer route, neighbour and FDB entry", func(t *testing.T) {
		for _, n := range rc.nodes() {
			routes, neigh, fdb := Routes(t, n.Host), n.Run(t, "ip", "neigh", "show", "dev", "weft.1"), n.Run(t, "bridge", "fdb", "show", "dev", "weft.1")
			for _, p := range rc.nodes() {
				if p == n {
					continue
				}
				gw, mac := p.subnet(t).Addr(), p.vtepMAC(t)
				if want := fmt.Sprintf("%s via %s dev weft.1 proto 211 onlink", p.subnet(t), gw); !strings.Contains(routes, want) {
					t.Errorf("%s lacks route %q:\n%s", n.Name, want, routes)
				}
				if want := fmt.Sprintf("%s lladdr %s PERMANENT", gw, mac); !strings.Contains(neigh, want) {
					t.Errorf("%s lacks neighbour %q:\n%s", n.Name, want, neigh)
				}
				if want := fmt.Sprintf("%s dst %s self permanent", mac, p.IP()); !strings.Contains(fdb, want) {
					t.Errorf("%s lacks FDB entry %q:\n%s", n.Name, want, fdb)
				}
			}
		}
	})
	t.Run("pods reach pods across segments", func(t *testing.T) { podMesh(t, pods) })
	t.Run("weft status checks the vxlan routes", func(t *testing.T) {
		n := rc.n21
		out, err := n.Try(Bin(t, "weft"), "status", "--etcd-endpoints="+rc.endpoint, "--iface=eth0",
			"--subnet-file="+filepath.Join(n.dir, "subnet.env"))
		want := fmt.Sprintf("%s via %s: route present", rc.n31.subnet(t), rc.n31.subnet(t).Addr())
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("weft status on a healthy vxlan node: %v, want it to pass and show %q:\n%s", err, want, out)
		}
	})
	t.Run("DF ping at full pod MTU passes, one byte more fails", func(t *testing.T) {
		from, to := byNode[rc.n21], pods[byNode[rc.n31]]
		if err := dfPing(from, to, 1450-28); err != nil {
			t.Errorf("DF ping of 1450 bytes %s -> %s: %v", pods[from], to, err)
		}
		// Refused for its size (the pod's MTU), not for any other reason.
		if err := dfPing(from, to, 1450-28+1); err == nil || !strings.Contains(err.Error(), "mtu=1450") {
			t.Errorf("DF ping of 1451 bytes %s -> %s: %v, want it refused by the pod's MTU 1450", pods[from], to, err)
		}
	})
}

// TestVXLANDirectRouting: the daemon routes same-segment peers directly and
// the others through vxlan; a restart keeps the VtepMAC; a peer that goes
// takes its entries with it.
func TestVXLANDirectRouting(t *testing.T) {
	rc := newRoutedCluster(t, `{"Network":"172.7.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}`)
	procs := map[*node]*Proc{}
	for _, n := range rc.nodes() {
		procs[n] = n.startDaemon(t)
	}
	for _, n := range rc.nodes() {
		n.waitReady(t)
	}
	n21, n22, n31 := rc.n21, rc.n22, rc.n31
	s22, s31 := n22.subnet(t), n31.subnet(t)
	n21.waitRoute(t, s22, n22.IP(), true)
	onlink := func(n, p *node) string {
		return fmt.Sprintf("%s via %s dev weft.1 proto 211 onlink", p.subnet(t), p.subnet(t).Addr())
	}
	waitLine := func(n *node, line string, want bool, args ...string) {
		t.Helper()
		WaitFor(t, 15*time.Second, fmt.Sprintf("%s: %q present=%v", n.Name, line, want), func() (bool, error) {
			return strings.Contains(n.Run(t, args...), line) == want, nil
		})
	}
	for _, n := range []*node{n21, n22} {
		waitLine(n, onlink(n, n31), true, "ip", "route")
		waitLine(n31, onlink(n31, n), true, "ip", "route")
	}
	t.Run("leases as flannel writes them", rc.checkLeases)
	t.Run("no vxlan entries for same-segment peers", func(t *testing.T) {
		neigh, fdb := n21.Run(t, "ip", "neigh", "show", "dev", "weft.1"), n21.Run(t, "bridge", "fdb", "show", "dev", "weft.1")
		if strings.Contains(neigh, s22.Addr().String()+" ") || strings.Contains(fdb, n22.vtepMAC(t)) {
			t.Errorf("node21 has vxlan entries for node22 on its segment:\n%s\n%s", neigh, fdb)
		}
		if !strings.Contains(neigh, s31.Addr().String()+" lladdr "+n31.vtepMAC(t)) || !strings.Contains(fdb, n31.vtepMAC(t)+" dst "+n31.IP().String()) {
			t.Errorf("node21 lacks vxlan entries for node31:\n%s\n%s", neigh, fdb)
		}
	})
	pods := map[string]netip.Addr{}
	for _, n := range rc.nodes() {
		pod := rc.tp.PodNS(t, n.Name+"-pod")
		pods[pod] = n.add(t, pod)
	}
	t.Run("pods reach pods, direct and through vxlan", func(t *testing.T) { podMesh(t, pods) })
	t.Run("restart keeps the VtepMAC", func(t *testing.T) {
		mac, _ := rc.leaseOf(t, n31)
		n31.stopDaemon(t, procs[n31])
		n31.Run(t, "ip", "link", "del", "weft.1") // as after a reboot
		procs[n31] = n31.startDaemon(t)
		n31.waitReady(t)
		if again, _ := rc.leaseOf(t, n31); again != mac {
			t.Errorf("lease after restart %s, before %s", again, mac)
		}
		waitLine(n31, onlink(n31, n21), true, "ip", "route")
		for from, ip := range pods {
			for to := range pods {
				if from != to {
					if err := Ping(to, ip); err != nil {
						t.Errorf("after restart, ping -> %s: %v", ip, err)
					}
				}
			}
		}
	})
	t.Run("the choice follows the underlay", func(t *testing.T) {
		// node22 joins node31's segment: node31 becomes directly reachable.
		n22.Attach(t, rc.b, "eth1", netip.MustParsePrefix("10.4.8.22/24"))
		waitLine(n22, fmt.Sprintf("%s via %s dev eth1", s31, n31.IP()), true, "ip", "route")
		waitLine(n22, onlink(n22, n31), false, "ip", "route")
		for pod, ip := range pods {
			if strings.HasSuffix(pod, "node31-pod") {
				for from := range pods {
					if strings.HasSuffix(from, "node22-pod") {
						if err := Ping(from, ip); err != nil {
							t.Errorf("node22's pod -> node31's pod over the new direct path: %v", err)
						}
					}
				}
			}
		}
	})
	t.Run("a peer that goes takes its entries", func(t *testing.T) {
		n31.stopDaemon(t, procs[n31])
		mac := n31.vtepMAC(t)
		rc.etcdctl(t, "del", "/coreos.com/network/subnets/"+strings.ReplaceAll(s31.String(), "/", "-"))
		waitLine(n21, onlink(n21, n31), false, "ip", "route")
		waitLine(n21, s31.Addr().String()+" ", false, "ip", "neigh", "show", "dev", "weft.1")
		waitLine(n21, mac, false, "bridge", "fdb", "show", "dev", "weft.1")
	})
}
