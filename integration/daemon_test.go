//go:build integration

package integration

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var node23Addr = netip.MustParsePrefix("10.4.7.23/24")

// startDaemon runs `weft daemon` in the node with flanneld's flags and fast
// resync periods.
func (n *node) startDaemon(t *testing.T, extra ...string) *Proc {
	t.Helper()
	args := append([]string{Bin(t, "weft"), "daemon", "--etcd-endpoints=" + n.c.endpoint, "--iface=eth0",
		"--subnet-file=" + filepath.Join(n.dir, "subnet.env"), "--healthz-ip=127.0.0.1", "--healthz-port=2401",
		"--iptables-resync=1", "--route-resync=1"}, extra...)
	return n.Start(t, args...)
}

// health is the HTTP status of the daemon's endpoint (0 when unreachable).
func (n *node) health(t testing.TB, path string) int {
	out, err := n.Try(mustSrcIP(t), "http", "-t", "1s", "http://127.0.0.1:2401"+path)
	if err != nil {
		return 0
	}
	var code int
	fmt.Sscan(out, &code)
	return code
}

func (n *node) waitReady(t *testing.T) {
	t.Helper()
	WaitFor(t, 20*time.Second, n.Name+" /readyz 200", func() (bool, error) { return n.health(t, "/readyz") == 200, nil })
}

// routeVia waits until the node has (or, want false, lacks) a route to
// subnet via gw.
func (n *node) waitRoute(t *testing.T, subnet netip.Prefix, gw netip.Addr, want bool) {
	t.Helper()
	line := fmt.Sprintf("%s via %s dev eth0", subnet, gw)
	WaitFor(t, 15*time.Second, fmt.Sprintf("%s: route %q present=%v", n.Name, line, want), func() (bool, error) {
		return strings.Contains(Routes(t, n.Host), line) == want, nil
	})
}

func (n *node) stopDaemon(t *testing.T, p *Proc) {
	t.Helper()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: daemon did not stop on SIGTERM", n.Name)
	}
}

// TestDaemonFollowsNodes: routes follow nodes joining, leaving and moving,
// with no pod added anywhere.
func TestDaemonFollowsNodes(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n21, n22 := c.node(t, "node21", node21Addr, nil), c.node(t, "node22", node22Addr, nil)
	d21, d22 := n21.startDaemon(t), n22.startDaemon(t)
	n21.waitReady(t)
	n22.waitReady(t)
	_ = d21
	s21, s22 := n21.subnet(t), n22.subnet(t)
	n21.waitRoute(t, s22, n22.IP(), true)
	n22.waitRoute(t, s21, n21.IP(), true)

	t.Run("node23 joins", func(t *testing.T) {
		n23 := c.node(t, "node23", node23Addr, nil)
		n23.startDaemon(t)
		n23.waitReady(t)
		s23 := n23.subnet(t)
		n21.waitRoute(t, s23, n23.IP(), true)
		n22.waitRoute(t, s23, n23.IP(), true)
		n23.waitRoute(t, s21, n21.IP(), true)
		n23.waitRoute(t, s22, n22.IP(), true)
	})
	t.Run("node22 changes its public IP", func(t *testing.T) {
		n22.Run(t, "ip", "addr", "del", "10.4.7.22/24", "dev", "eth0")
		n22.Run(t, "ip", "addr", "add", "10.4.7.32/24", "dev", "eth0")
		// The running daemon still advertises 10.4.7.22: it says so and
		// turns not ready, rather than leaving peers to route into the void.
		WaitFor(t, 15*time.Second, "node22's daemon not ready, naming its new address", func() (bool, error) {
			out, _ := n22.Try(Bin(t, "weft"), "status", "--etcd-endpoints="+c.endpoint, "--iface=eth0",
				"--subnet-file="+n22.dir+"/subnet.env", "--healthz-ip=127.0.0.1", "--healthz-port=2401")
			return strings.Contains(out, "FAIL  daemon") && strings.Contains(out, "eth0 now has 10.4.7.32"), nil
		})
		n22.stopDaemon(t, d22)
		n22.startDaemon(t)
		n22.waitReady(t)
		// As flanneld: the subnet file's subnet is still leased, to the
		// former address, so it is not taken (another node may hold it).
		got := n22.subnet(t)
		if got == s22 {
			t.Fatalf("node22 took back %s, still leased to its former address", s22)
		}
		n21.waitRoute(t, got, netip.MustParseAddr("10.4.7.32"), true)
	})
	t.Run("the former address's lease deleted", func(t *testing.T) {
		n21.waitRoute(t, s22, netip.MustParseAddr("10.4.7.22"), true) // still leased, still routed
		c.etcdctl(t, "del", "/coreos.com/network/subnets/"+strings.ReplaceAll(s22.String(), "/", "-"))
		n21.waitRoute(t, s22, netip.MustParseAddr("10.4.7.22"), false)
	})
}

// seedWithDaemons is the seed's two nodes, each with its daemon ready.
func seedWithDaemons(t *testing.T) (*cluster, *node, *node) {
	c := newCluster(t, seedNetwork)
	n21, n22 := c.node(t, "node21", node21Addr, nil), c.node(t, "node22", node22Addr, nil)
	n21.startDaemon(t)
	n22.startDaemon(t)
	n21.waitReady(t)
	n22.waitReady(t)
	return c, n21, n22
}

// TestDaemonRepairsRules: docker's MASQUERADE inserted on top is undone
// within the resync period and pod source IPs are preserved again.
func TestDaemonRepairsRules(t *testing.T) {
	c, n21, n22 := seedWithDaemons(t)
	client, server := c.tp.PodNS(t, "client"), c.tp.PodNS(t, "server")
	clientIP, serverIP := n21.add(t, client), n22.add(t, server)
	n21.waitRoute(t, n22.subnet(t), n22.IP(), true)
	n21.Run(t, "iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-s", n21.subnet(t).String(), "!", "-o", "docker0", "-j", "MASQUERADE")
	WaitFor(t, 10*time.Second, "our jump back in front of docker's rule", func() (bool, error) {
		rules := n21.natRules(t)
		return len(rules) > 1 && strings.Contains(rules[1], "-j WEFT-POSTRTG"), nil
	})
	if got := SourceIPSeen(t, server, serverIP, client); got != clientIP {
		t.Errorf("after the repair the server saw %s, want the pod's %s", got, clientIP)
	}
	n21.Run(t, "iptables", "-t", "nat", "-F", "WEFT-POSTRTG")
	WaitFor(t, 10*time.Second, "flushed chain refilled", func() (bool, error) {
		out := n21.Run(t, "iptables", "-t", "nat", "-S", "WEFT-POSTRTG")
		return strings.Contains(out, "-j ACCEPT") && strings.Contains(out, "-j MASQUERADE"), nil
	})
}

// TestPluginFollowsTheDaemonsMasquerade: with ipMasq unset in the conflist,
// the plugin's own rule repair (an ADD that finds docker's rule above weft's
// jump) keeps the daemon's --ip-masq=false instead of putting a MASQUERADE
// rule back that the daemon would remove again.
func TestPluginFollowsTheDaemonsMasquerade(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n21 := c.node(t, "node21", node21Addr, nil)
	d := n21.startDaemon(t, "--ip-masq=false")
	n21.waitReady(t)
	n21.stopDaemon(t, d) // only the plugin repairs from here
	n21.Run(t, "iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-s", n21.subnet(t).String(), "!", "-o", "docker0", "-j", "MASQUERADE")
	n21.add(t, c.tp.PodNS(t, "pod"))
	if rules := n21.natRules(t); len(rules) < 2 || !strings.Contains(rules[1], "-j WEFT-POSTRTG") {
		t.Fatalf("the ADD did not put weft's jump back in front: %q", rules)
	}
	if out := n21.Run(t, "iptables", "-t", "nat", "-S", "WEFT-POSTRTG"); strings.Contains(out, "MASQUERADE") {
		t.Fatalf("the plugin masquerades although the daemon runs with --ip-masq=false:\n%s", out)
	}
}

// TestDaemonSurvivesOutages: etcd stopped beyond the lease TTL and the
// daemon killed: the node keeps its subnet and pods keep working.
func TestDaemonSurvivesOutages(t *testing.T) {
	RequireRoot(t)
	c := &cluster{tp: NewTopology(t)}
	c.seg = c.tp.Segment("lan")
	c.etcd = c.tp.Host("etcd", c.seg, etcdAddr)
	etcdDir := t.TempDir()
	etcd, ep := c.tp.StartEtcdDir(t, c.etcd, etcdDir)
	c.endpoint = ep
	n21, n22 := c.node(t, "node21", node21Addr, nil), c.node(t, "node22", node22Addr, nil)

	// The daemon must outlive the subtests, so it is started on t.
	n21.startDaemon(t, "--subnet-lease-ttl=10s")
	t.Run("readyz is 503 until the node holds a lease", func(t *testing.T) {
		WaitFor(t, 10*time.Second, "/healthz 200", func() (bool, error) { return n21.health(t, "/healthz") == 200, nil })
		if code := n21.health(t, "/readyz"); code != 503 {
			t.Errorf("/readyz = %d with no network config in etcd, want 503", code)
		}
		c.etcdctl(t, "put", "/coreos.com/network/config", seedNetwork)
		n21.waitReady(t)
	})
	d22 := n22.startDaemon(t, "--subnet-lease-ttl=10s")
	n22.waitReady(t)
	s21, s22 := n21.subnet(t), n22.subnet(t)
	p21, p22 := c.tp.PodNS(t, "a"), c.tp.PodNS(t, "b")
	ip21, ip22 := n21.add(t, p21), n22.add(t, p22)
	n21.waitRoute(t, s22, n22.IP(), true)

	outer := t // processes that must outlive a subtest are started on it
	t.Run("etcd down beyond the TTL", func(t *testing.T) {
		etcd.Stop()
		restarted := false
		defer func() {
			if !restarted {
				c.tp.StartEtcdDir(outer, c.etcd, etcdDir)
			}
		}()
		WaitFor(t, 20*time.Second, "node21 notices its lease ran out", func() (bool, error) {
			return n21.health(t, "/readyz") == 503, nil
		})
		if err := Ping(p21, ip22); err != nil {
			t.Errorf("pods lost connectivity while etcd was down: %v", err)
		}
		pod := c.tp.PodNS(t, "during-outage")
		if ip := n21.add(t, pod); !s21.Contains(ip) {
			t.Errorf("a pod started during the outage got %s, outside %s", ip, s21)
		}
		restarted = true
		etcd, _ = c.tp.StartEtcdDir(outer, c.etcd, etcdDir)
		n21.waitReady(t)
		n22.waitReady(t)
		if a, b := n21.subnet(t), n22.subnet(t); a != s21 || b != s22 {
			t.Errorf("subnets moved across the etcd outage: %s,%s -> %s,%s", s21, s22, a, b)
		}
	})
	t.Run("daemon killed and restarted", func(t *testing.T) {
		if err := d22.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-d22.Done()
		if err := Ping(p21, ip22); err != nil {
			t.Errorf("pods lost connectivity with the daemon dead: %v", err)
		}
		n22.startDaemon(t, "--subnet-lease-ttl=10s")
		n22.waitReady(t)
		if got := n22.subnet(t); got != s22 {
			t.Errorf("node22 moved from %s to %s across a daemon restart", s22, got)
		}
		if err := Ping(p22, ip21); err != nil {
			t.Errorf("pods cannot reach each other after the restart: %v", err)
		}
	})
}

// TestHostGWUnreachablePeer: a host-gw peer on another segment cannot be
// routed to; unlike flannel, weft says so in `weft status` and keeps routing
// to the peers it can reach.
func TestHostGWUnreachablePeer(t *testing.T) {
	rc := newRoutedCluster(t, seedNetwork)
	for _, n := range rc.nodes() {
		n.startDaemon(t)
	}
	for _, n := range rc.nodes() {
		n.waitReady(t)
	}
	rc.n21.waitRoute(t, rc.n22.subnet(t), rc.n22.IP(), true)
	status := []string{Bin(t, "weft"), "status", "--etcd-endpoints=" + rc.endpoint, "--iface=eth0",
		"--subnet-file=" + filepath.Join(rc.n21.dir, "subnet.env")}
	out, err := rc.n21.Try(status...)
	if err == nil {
		t.Fatalf("weft status passed with an unroutable peer:\n%s", out)
	}
	want := fmt.Sprintf("%s is not directly reachable", rc.n31.IP())
	if !strings.Contains(out+err.Error(), want) {
		t.Errorf("weft status does not say %q:\n%s\n%v", want, out, err)
	}
}

// TestDaemonPublicIPCIDR: a lease whose PublicIP lies outside
// --public-ip-cidr is ignored rather than routed.
func TestDaemonPublicIPCIDR(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n21, n22 := c.node(t, "node21", node21Addr, nil), c.node(t, "node22", node22Addr, nil)
	n22.startDaemon(t)
	n22.waitReady(t)
	n21.startDaemon(t, "--public-ip-cidr=10.4.7.0/24")
	n21.waitReady(t)
	n21.waitRoute(t, n22.subnet(t), n22.IP(), true)
	forged := netip.MustParsePrefix("172.7.99.0/24")
	c.etcdctl(t, "put", "/coreos.com/network/subnets/172.7.99.0-24", `{"PublicIP":"10.4.7.99","PublicIPv6":null,"BackendType":"host-gw"}`)
	n21.waitRoute(t, forged, netip.MustParseAddr("10.4.7.99"), true) // inside: routed
	c.etcdctl(t, "put", "/coreos.com/network/subnets/172.7.99.0-24", `{"PublicIP":"192.0.2.9","PublicIPv6":null,"BackendType":"host-gw"}`)
	n21.waitRoute(t, forged, netip.MustParseAddr("10.4.7.99"), false)
	// node21's next route resync puts back a route deleted by hand; once it
	// has, the outside lease must still have no route.
	n21.Run(t, "ip", "route", "del", n22.subnet(t).String())
	n21.waitRoute(t, n22.subnet(t), n22.IP(), true)
	if routes := Routes(t, n21.Host); strings.Contains(routes, forged.String()) {
		t.Errorf("node21 routes a lease outside --public-ip-cidr:\n%s", routes)
	}
}

// TestStatusAllWell: on a node whose daemon is ready and that runs a pod,
// `weft status` passes and shows the bridge as an operator would check it:
// its gateway, its fixed MAC, its pods and the last sync.
func TestStatusAllWell(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n21, n22 := c.node(t, "node21", node21Addr, nil), c.node(t, "node22", node22Addr, nil)
	for _, n := range []*node{n21, n22} {
		n.startDaemon(t)
		n.waitReady(t)
	}
	n21.add(t, c.tp.PodNS(t, "a"))
	n21.waitRoute(t, n22.subnet(t), n22.IP(), true)
	gw := n21.subnet(t).Addr().Next()
	out, err := n21.Try(Bin(t, "weft"), "status", "--etcd-endpoints="+c.endpoint, "--iface=eth0",
		"--subnet-file="+filepath.Join(n21.dir, "subnet.env"), "--healthz-ip=127.0.0.1", "--healthz-port=2401")
	if err != nil {
		t.Fatalf("weft status failed on a healthy node: %v\n%s", err, out)
	}
	b := gw.As4()
	for _, want := range []string{
		fmt.Sprintf("weft0: [%s/24], MAC 0a:58:%02x:%02x:%02x:%02x, 1 pod(s), last sync with etcd", gw, b[0], b[1], b[2], b[3]),
		"ok    daemon", "status: ok",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("weft status lacks %q:\n%s", want, out)
		}
	}
}

// TestDaemonRestoresTheBridge: the bridge's connected route deleted by
// hand, then the bridge itself deleted: the daemon puts the route back and
// makes the bridge again with the running pod's veth on it, so the pod is
// reachable from the other node again.
func TestDaemonRestoresTheBridge(t *testing.T) {
	c, n21, n22 := seedWithDaemons(t)
	pod, other := c.tp.PodNS(t, "pod"), c.tp.PodNS(t, "other")
	podIP := n21.add(t, pod)
	n22.add(t, other)
	n22.waitRoute(t, n21.subnet(t), n21.IP(), true)
	reachable := func(what string) {
		t.Helper()
		WaitFor(t, 15*time.Second, what, func() (bool, error) { return Ping(other, podIP) == nil, nil })
	}
	reachable("the pod reachable from node22")

	subnet := n21.subnet(t).String()
	n21.Run(t, "ip", "route", "del", subnet, "dev", "weft0")
	WaitFor(t, 15*time.Second, "the bridge's route back", func() (bool, error) {
		return strings.Contains(Routes(t, n21.Host), subnet+" dev weft0"), nil
	})
	reachable("the pod reachable again after its subnet's route was deleted")

	// A second pod added with hairpinMode false gets its port back as it was.
	n21.setPluginField(t, "hairpinMode", false)
	noHairpinIP := n21.add(t, c.tp.PodNS(t, "nohairpin"))
	n21.Run(t, "ip", "link", "del", "weft0")
	var ports map[netip.Addr]string
	WaitFor(t, 15*time.Second, "the pods' veths back on a new bridge", func() (bool, error) {
		ports = bridgePorts(t, n21)
		return len(ports) == 2, nil
	})
	reachable("the pod reachable again after the bridge was deleted")
	for ip, want := range map[netip.Addr]string{podIP: "hairpin on", noHairpinIP: "hairpin off"} {
		if !strings.Contains(ports[ip], want) {
			t.Errorf("port of the pod at %s put back without %q:\n%s", ip, want, ports[ip])
		}
	}
}

// bridgePorts maps the address of each pod on n's bridge to its port's
// details (`ip -d link`), found by the pod's mark.
func bridgePorts(t *testing.T, n *node) map[netip.Addr]string {
	t.Helper()
	out, err := n.Try("ip", "-o", "-d", "link", "show", "master", "weft0")
	if err != nil {
		return nil
	}
	ports := map[netip.Addr]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		_, mark, ok := strings.Cut(line, "alias weft pod ")
		if !ok {
			continue
		}
		if ip, err := netip.ParseAddr(strings.Fields(mark)[0]); err == nil {
			ports[ip] = line
		}
	}
	return ports
}

// TestDaemonReportsANetworkConfigChange: the Network is widened in etcd
// while the daemon runs. It applies the new config only when it restarts
// (as flanneld), so until then it is not ready, naming both configs, and
// weft status flags the subnet file's network; after a restart it runs the
// new config and is ready.
func TestDaemonReportsANetworkConfigChange(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n21 := c.node(t, "node21", node21Addr, nil)
	d21 := n21.startDaemon(t, "--relist-interval=1s")
	n21.waitReady(t)
	c.etcdctl(t, "put", "/coreos.com/network/config", `{"Network": "172.6.0.0/15", "Backend": {"Type": "host-gw"}}`)
	status := func() string {
		out, _ := n21.Try(Bin(t, "weft"), "status", "--etcd-endpoints="+c.endpoint, "--iface=eth0",
			"--subnet-file="+n21.dir+"/subnet.env", "--healthz-ip=127.0.0.1", "--healthz-port=2401")
		return out
	}
	WaitFor(t, 15*time.Second, "node21 not ready over the changed config", func() (bool, error) {
		out := status()
		return strings.Contains(out, "etcd now says Network 172.6.0.0/15") &&
			strings.Contains(out, "FAIL  subnet file") && strings.Contains(out, "etcd's network config says 172.6.0.0/15"), nil
	})
	n21.stopDaemon(t, d21)
	n21.startDaemon(t, "--relist-interval=1s")
	n21.waitReady(t)
	if file := n21.Run(t, "cat", n21.dir+"/subnet.env"); !strings.Contains(file, "FLANNEL_NETWORK=172.6.0.0/15") {
		t.Errorf("after the restart the subnet file is:\n%s", file)
	}
}

// TestDaemonAddressCheckWithSeveralAddresses: eth0 holds a second address,
// in another subnet, and the advertised one is deleted and added back (an
// operator, a network manager restarting), so that it is no longer eth0's
// first. The daemon's address is still eth0's, where peers reach it: the
// node is ready again once it is back.
func TestDaemonAddressCheckWithSeveralAddresses(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n21 := c.node(t, "node21", node21Addr, nil)
	n21.startDaemon(t)
	n21.waitReady(t)
	n21.Run(t, "ip", "addr", "add", "10.9.9.21/24", "dev", "eth0")
	n21.Run(t, "ip", "addr", "del", node21Addr.String(), "dev", "eth0")
	n21.Run(t, "ip", "addr", "add", node21Addr.String(), "dev", "eth0")
	n21.waitReady(t)
	for range 3 { // the route resync is 1 s
		time.Sleep(time.Second)
		if code := n21.health(t, "/readyz"); code != 200 {
			t.Fatalf("/readyz = %d with its address on eth0, after another one", code)
		}
	}
}
