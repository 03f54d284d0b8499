//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestGoCNI drives weft through containerd's go-cni, as containerd does.
func TestGoCNI(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n21 := c.node(t, "node21", node21Addr, nil)
	n22 := c.node(t, "node22", node22Addr, nil)
	cnirun, err := Tool("cnirun")
	if err != nil {
		t.Fatal(err)
	}
	gocni := func(n *node, args ...string) (string, error) {
		return n.Try(append([]string{"env", "CNI_PATH=" + cniPath(t), cnirun, "gocni", args[0], n.confDir()}, args[1:]...)...)
	}
	if _, err := gocni(n21, "status"); err != nil {
		t.Fatalf("go-cni Status before any lease (etcd reachable, a subnet free): %v", err)
	}
	pod21, pod22 := c.tp.PodNS(t, "a"), c.tp.PodNS(t, "b")
	var ips []netip.Addr
	for _, p := range []struct {
		n   *node
		pod string
	}{{n21, pod21}, {n22, pod22}} {
		out, err := gocni(p.n, "setup", "ctr-"+p.n.Name, p.pod)
		if err != nil {
			t.Fatalf("go-cni Setup on %s: %v", p.n, err)
		}
		var res struct {
			Interfaces map[string]struct{ IPConfigs []struct{ IP string } }
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("go-cni result %q: %v", out, err)
		}
		ip, err := netip.ParseAddr(res.Interfaces["eth0"].IPConfigs[0].IP)
		if err != nil {
			t.Fatalf("go-cni result has no eth0 address: %s", out)
		}
		ips = append(ips, ip)
	}
	// node21 was set up before node22 had a lease; it learns node22 at its
	// next sync (peerSyncInterval 0: the next ADD).
	second := c.tp.PodNS(t, "c")
	if _, err := gocni(n21, "setup", "ctr-second", second); err != nil {
		t.Fatalf("second go-cni Setup on node21: %v", err)
	}
	if _, err := gocni(n21, "remove", "ctr-second", second); err != nil {
		t.Fatalf("go-cni Remove of the second pod: %v", err)
	}
	if err := Ping(pod22, ips[0]); err != nil {
		t.Errorf("ping %s -> %s: %v", ips[1], ips[0], err)
	}
	if _, err := gocni(n21, "check", "ctr-node21", pod21); err != nil {
		t.Errorf("go-cni Check: %v", err)
	}
	for _, p := range []struct {
		n   *node
		pod string
	}{{n21, pod21}, {n22, pod22}} {
		if _, err := gocni(p.n, "remove", "ctr-"+p.n.Name, p.pod); err != nil {
			t.Errorf("go-cni Remove on %s: %v", p.n, err)
		}
		if got := p.n.allocations(t); got != 0 {
			t.Errorf("%s holds %d addresses after Remove", p.n, got)
		}
	}
}

// veths counts the pods' veth links on the node, on the bridge or not (a
// pair plugged in by an ADD killed before it joined the bridge): the links
// the plugin names veth<random>; the node's own eth0 is a veth too.
func veths(t testing.TB, n *node) int {
	count := 0
	for _, line := range strings.Split(n.Run(t, "ip", "-o", "link", "show", "type", "veth"), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], "veth") {
			count++
		}
	}
	return count
}

// TestConcurrentAdds: 30 ADDs at once get 30 distinct addresses; 30 DELs
// leave the store empty and no veth behind.
func TestConcurrentAdds(t *testing.T) {
	const pods = 30
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, map[string]any{"peerSyncInterval": 60})
	cniPath(t) // a missing binary skips (or fails) here, not in a worker goroutine
	paths := make([]string, pods)
	for i := range paths {
		paths[i] = c.tp.PodNS(t, fmt.Sprintf("p%d", i))
	}
	got := make([]netip.Addr, pods)
	errs := make([]error, pods)
	var wg sync.WaitGroup
	for i := range paths {
		wg.Go(func() {
			out, err := n.cnitool(t, "add", paths[i])
			if err != nil {
				errs[i] = err
				return
			}
			var res struct {
				IPs []struct{ Address string } `json:"ips"`
			}
			if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.IPs) == 0 {
				errs[i] = fmt.Errorf("result %q: %v", out, err)
				return
			}
			got[i] = netip.MustParsePrefix(res.IPs[0].Address).Addr()
		})
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i, ip := range got {
		if errs[i] != nil {
			t.Errorf("ADD %d: %v", i, errs[i])
			continue
		}
		if j, dup := seen[ip]; dup {
			t.Errorf("pods %d and %d both got %s", j, i, ip)
		}
		seen[ip] = i
	}
	if len(seen) != pods || n.allocations(t) != pods || veths(t, n) != pods {
		t.Fatalf("%d distinct addresses, %d allocations, %d veths; want %d of each", len(seen), n.allocations(t), veths(t, n), pods)
	}
	for i := range paths {
		wg.Go(func() {
			if _, err := n.cnitool(t, "del", paths[i]); err != nil {
				t.Errorf("DEL %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if a, v := n.allocations(t), veths(t, n); a != 0 || v != 0 {
		t.Errorf("after 30 DELs: %d allocations and %d veths left", a, v)
	}
}

// TestSubnetExhaustion: a /28 node subnet holds 13 pods; the 14th ADD fails
// with a clear error and leaves nothing behind.
func TestSubnetExhaustion(t *testing.T) {
	c := newCluster(t, `{"Network": "172.7.0.0/16", "SubnetLen": 28}`)
	n := c.node(t, "node21", node21Addr, map[string]any{"peerSyncInterval": 60})
	for i := 0; i < 13; i++ {
		n.add(t, c.tp.PodNS(t, fmt.Sprintf("p%d", i)))
	}
	last := c.tp.PodNS(t, "p13")
	_, err := n.cnitool(t, "add", last)
	if err == nil {
		t.Fatal("14th ADD into a /28 succeeded")
	}
	want := fmt.Sprintf("no free address in %s: 13 of 13 in use", n.subnet(t))
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if a, v := n.allocations(t), veths(t, n); a != 13 || v != 13 {
		t.Errorf("after the failed ADD: %d allocations, %d veths; want 13 and 13", a, v)
	}
	if _, err := TryIn(last, "ip", "link", "show", "eth0"); err == nil {
		t.Error("the failed ADD left eth0 in the pod")
	}
}

// TestLeaseRace: three nodes start pods at once in a network with room for
// exactly three subnets: three distinct subnets; a fourth node is refused.
func TestLeaseRace(t *testing.T) {
	c := newCluster(t, `{"Network": "172.7.0.0/24", "SubnetLen": 26}`)
	nodes := []*node{
		c.node(t, "node21", node21Addr, nil), c.node(t, "node22", node22Addr, nil),
		c.node(t, "node23", netip.MustParsePrefix("10.4.7.23/24"), nil),
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		pod := c.tp.PodNS(t, n.Name)
		wg.Go(func() {
			if _, err := n.cnitool(t, "add", pod); err != nil {
				t.Errorf("ADD on %s: %v", n, err)
			}
		})
	}
	wg.Wait()
	subnets := map[netip.Prefix]string{}
	for _, n := range nodes {
		s := n.subnet(t)
		if other, dup := subnets[s]; dup {
			t.Errorf("%s and %s both hold %s", other, n, s)
		}
		subnets[s] = n.Name
	}
	if leases := c.leases(t); len(leases) != 3 {
		t.Errorf("%d leases in etcd, want 3: %v", len(leases), leases)
	}
	fourth := c.node(t, "node24", netip.MustParsePrefix("10.4.7.24/24"), nil)
	refused := c.tp.PodNS(t, "node24")
	_, err := fourth.cnitool(t, "add", refused)
	if err == nil || !strings.Contains(err.Error(), "no free subnet") {
		t.Errorf("fourth node: err %v, want no free subnet", err)
	}
	// The refusal changed nothing: no lease, subnet file, bridge, rules or
	// pod interface.
	if leases := c.leases(t); len(leases) != 3 {
		t.Errorf("%d leases in etcd after the refused ADD, want 3: %v", len(leases), leases)
	}
	if _, err := os.Stat(filepath.Join(fourth.dir, "subnet.env")); !os.IsNotExist(err) {
		t.Errorf("the refused ADD left a subnet file (stat: %v)", err)
	}
	if _, err := fourth.Try("ip", "link", "show", "weft0"); err == nil {
		t.Error("the refused ADD created the bridge")
	}
	if rules := fourth.Run(t, "iptables-save"); strings.Contains(rules, "WEFT") {
		t.Errorf("the refused ADD installed rules:\n%s", rules)
	}
	if _, err := TryIn(refused, "ip", "link", "show", "eth0"); err == nil {
		t.Error("the refused ADD left an eth0 in the pod")
	}
	if out, err := fourth.cnitool(t, "status", c.tp.PodNS(t, "status")); err == nil {
		t.Errorf("STATUS on a node that cannot get a lease passed: %s", out)
	}
}

// TestBridgeWithWeftIPAM: weft-ipam as the IPAM of the reference bridge plugin.
func TestBridgeWithWeftIPAM(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, nil)
	n.writeConflist(t, map[string]any{"cniVersion": "1.0.0", "name": "weft", "plugins": []any{map[string]any{
		"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true, "ipMasq": false,
		"ipam": map[string]any{"type": "weft-ipam", "etcdEndpoints": []string{c.endpoint}, "iface": "eth0",
			"subnetFile": filepath.Join(n.dir, "subnet.env"), "dataDir": filepath.Join(n.dir, "ipam")},
	}}})
	pod := c.tp.PodNS(t, "a")
	ip := n.add(t, pod)
	subnet := n.subnet(t)
	if !subnet.Contains(ip) || ip == subnet.Addr().Next() {
		t.Fatalf("bridge+weft-ipam gave %s, want a pod address in %s", ip, subnet)
	}
	if err := Ping(pod, subnet.Addr().Next()); err != nil {
		t.Errorf("pod cannot reach its gateway %s: %v", subnet.Addr().Next(), err)
	}
	if out, err := n.cnitool(t, "check", pod); err != nil {
		t.Errorf("CHECK: %v %s", err, out)
	}
	n.del(t, pod)
	if a := n.allocations(t); a != 0 {
		t.Errorf("%d allocations after DEL", a)
	}
}

// TestIPAMStatusChangesNothing: STATUS through the reference bridge to
// weft-ipam, on a node with no lease yet, passes (a subnet is free) and
// leaves no subnet file and no lease behind: STATUS is informational.
func TestIPAMStatusChangesNothing(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, nil)
	n.writeConflist(t, map[string]any{"cniVersion": "1.1.0", "name": "weft", "plugins": []any{map[string]any{
		"type": "bridge", "bridge": "cni0", "isGateway": true,
		"ipam": map[string]any{"type": "weft-ipam", "etcdEndpoints": []string{c.endpoint}, "iface": "eth0",
			"subnetFile": filepath.Join(n.dir, "subnet.env"), "dataDir": filepath.Join(n.dir, "ipam")},
	}}})
	if out, err := n.cnitool(t, "status", c.tp.PodNS(t, "status")); err != nil {
		t.Fatalf("STATUS on a node that can get a lease: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(n.dir, "subnet.env")); !os.IsNotExist(err) {
		t.Errorf("STATUS wrote the subnet file (stat: %v)", err)
	}
	if leases := c.leases(t); len(leases) != 0 {
		t.Errorf("STATUS left leases in etcd: %v", leases)
	}
}

// TestGC: GC frees every allocation not in cni.dev/valid-attachments.
func TestGC(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, nil)
	keep, drop := c.tp.PodNS(t, "keep"), c.tp.PodNS(t, "drop")
	n.add(t, keep)
	n.add(t, drop)
	cnirun, err := Tool("cnirun")
	if err != nil {
		t.Fatal(err)
	}
	// cnitool's container ID for a netns path, as cnitool derives it.
	keepID := cnitoolID(keep)
	n.Run(t, "env", "CNI_PATH="+cniPath(t), cnirun, "gc", filepath.Join(n.confDir(), "10-weft.conflist"), keepID+":eth0")
	if a := n.allocations(t); a != 1 {
		t.Fatalf("%d allocations after GC, want the kept pod's only", a)
	}
	if out, err := n.cnitool(t, "check", keep); err != nil {
		t.Errorf("the kept pod fails CHECK after GC: %v %s", err, out)
	}
}

// TestGCKeepsWiredAddresses: a GC that lists no attachment (what `cnitool
// gc` sends, or a runtime with a stale list) frees only the addresses whose
// pod interface is gone. One still wired stays held, so no new pod is given
// a live pod's address.
func TestGCKeepsWiredAddresses(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, nil)
	conf := n.netconf(t, 0, nil)
	live, lost := c.tp.PodNS(t, "live"), c.tp.PodNS(t, "lost")
	for id, pod := range map[string]string{"live": live, "lost": lost} {
		if out, err := n.call(t, "ADD", id, pod, conf); err != nil {
			t.Fatalf("ADD %s: %v %s", id, err, out)
		}
	}
	RunIn(t, lost, "ip", "link", "del", "eth0") // the runtime lost this pod
	if err := n.gc(t, conf, nil); err != nil {
		t.Fatalf("GC: %v", err)
	}
	store := n.store(t)
	if _, ok := store["live"]; !ok || len(store) != 1 {
		t.Fatalf("after GC the store holds %v, want only the pod whose interface exists", store)
	}
	if err := Ping(live, n.subnet(t).Addr().Next()); err != nil {
		t.Errorf("the live pod lost its network: %v", err)
	}
}

// TestSpecVersions: results come back in the version the runtime asked for.
func TestSpecVersions(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, nil)
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		n.writeConflist(t, map[string]any{"cniVersion": v, "name": "weft", "plugins": []any{map[string]any{
			"type": "weft", "iface": "eth0", "etcdEndpoints": []string{c.endpoint},
			"subnetFile": filepath.Join(n.dir, "subnet.env"), "ipam": map[string]any{"dataDir": filepath.Join(n.dir, "ipam")},
		}}})
		pod := c.tp.PodNS(t, "v"+strings.ReplaceAll(v, ".", ""))
		out, err := n.cnitool(t, "add", pod)
		if err != nil {
			t.Fatalf("ADD with cniVersion %s: %v", v, err)
		}
		var res struct {
			CNIVersion string `json:"cniVersion"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.CNIVersion != v {
			t.Errorf("cniVersion %s: result says %q (%v):\n%s", v, res.CNIVersion, err, out)
		}
		if ip := resultIP(t, out); !n.subnet(t).Contains(ip) {
			t.Errorf("cniVersion %s: address %s outside %s", v, ip, n.subnet(t))
		}
		n.del(t, pod)
	}
}

// TestBridgeMACStable: the bridge's MAC is fixed (derived from the gateway
// address), so pods joining and leaving never change the gateway MAC that
// the other pods have in their ARP caches. A bridge left to the kernel takes
// its lowest port's MAC and changes with them.
func TestBridgeMACStable(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, nil)
	var pods []string
	for i := range 8 {
		pod := c.tp.PodNS(t, fmt.Sprintf("m%d", i))
		n.add(t, pod)
		pods = append(pods, pod)
	}
	gw := n.subnet(t).Addr().Next()
	want := fmt.Sprintf("0a:58:%02x:%02x:%02x:%02x", gw.As4()[0], gw.As4()[1], gw.As4()[2], gw.As4()[3])
	mac := func() string { return strings.TrimSpace(n.Run(t, "cat", "/sys/class/net/weft0/address")) }
	if got := mac(); got != want {
		t.Fatalf("bridge MAC %s, want %s (from the gateway %s)", got, want, gw)
	}
	if got := strings.TrimSpace(n.Run(t, "cat", "/sys/class/net/weft0/addr_assign_type")); got != "3" {
		t.Errorf("bridge addr_assign_type %s, want 3 (set, so the kernel never recomputes it)", got)
	}
	for _, pod := range pods {
		n.del(t, pod)
		if got := mac(); got != want {
			t.Fatalf("bridge MAC changed to %s after a pod left", got)
		}
	}
	n.add(t, c.tp.PodNS(t, "m-last"))
	if got := mac(); got != want {
		t.Fatalf("bridge MAC changed to %s after a pod joined", got)
	}
}

// TestDelKeepsAddressOfUndeletableInterface: a DEL that cannot remove the
// pod's interface fails and keeps the address allocated (a new pod does not
// get it while the old one may still use it); once the interface can go, a
// retried DEL frees it. The pod's eth0 is made undeletable by swapping in
// its loopback device under that name.
func TestDelKeepsAddressOfUndeletableInterface(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, nil)
	pod := c.tp.PodNS(t, "stuck")
	addr := n.add(t, pod)
	RunIn(t, pod, "ip", "link", "set", "eth0", "name", "veth-real")
	RunIn(t, pod, "ip", "link", "set", "lo", "down")
	RunIn(t, pod, "ip", "link", "set", "lo", "name", "eth0")
	if out, err := n.cnitool(t, "del", pod); err == nil {
		t.Fatalf("DEL succeeded though eth0 (the loopback) cannot be deleted:\n%s", out)
	}
	if got := n.store(t)[cnitoolID(pod)]; got != addr {
		t.Fatalf("after the failed DEL the pod's allocation is %v, want %v still held", got, addr)
	}
	other := n.add(t, c.tp.PodNS(t, "other"))
	if other == addr {
		t.Fatalf("a new pod got %v, still held by the pod whose DEL failed", addr)
	}
	RunIn(t, pod, "ip", "link", "set", "eth0", "name", "lo")
	RunIn(t, pod, "ip", "link", "set", "veth-real", "name", "eth0")
	n.del(t, pod)
	if _, held := n.store(t)[cnitoolID(pod)]; held {
		t.Fatalf("the retried DEL left the address allocated: %v", n.store(t))
	}
}

// TestDelRefusesTheNodesNamespace: a DEL whose CNI_NETNS is the node's own
// namespace fails with code 4 and deletes nothing there, neither the node's
// eth0 nor the bridge (skel checks the namespace only after DEL has run).
func TestDelRefusesTheNodesNamespace(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, nil)
	n.add(t, c.tp.PodNS(t, "a"))
	out, err := n.call(t, "DEL", "refused", n.Path(), n.netconf(t, 0, nil))
	var cniErr struct{ Code int }
	if err == nil || json.Unmarshal([]byte(strings.SplitN(out, "\n}", 2)[0]+"}"), &cniErr) != nil || cniErr.Code != 4 {
		t.Errorf("DEL of eth0 in the node's namespace: %v %s, want CNI error code 4", err, out)
	}
	if out, err := n.cnitool(t, "del", n.Path(), "CNI_IFNAME=weft0"); err == nil {
		t.Errorf("DEL of weft0 in the node's namespace succeeded:\n%s", out)
	}
	for _, ifname := range []string{"eth0", "weft0"} {
		if _, err := n.Try("ip", "link", "show", ifname); err != nil {
			t.Fatalf("the node's %s is gone after the refused DELs: %v", ifname, err)
		}
	}
}

// TestDelegatedIPAM: weft with the reference host-local as its IPAM, set up
// as host-local's own examples are (a default route, DNS from a
// resolv.conf). weft adds no second default route beside the IPAM's (the
// kernel would refuse it and fail every ADD) and keeps the IPAM's DNS.
func TestDelegatedIPAM(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, nil)
	n.add(t, c.tp.PodNS(t, "first")) // the node's lease, through weft-ipam
	subnet := n.subnet(t)
	resolv := filepath.Join(n.dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 10.96.0.10\nsearch cluster.local\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n.writeConflist(t, map[string]any{"cniVersion": "1.1.0", "name": "weft", "plugins": []any{map[string]any{
		"type": "weft", "iface": "eth0", "etcdEndpoints": []string{c.endpoint},
		"subnetFile": filepath.Join(n.dir, "subnet.env"),
		"ipam": map[string]any{"type": "host-local", "subnet": subnet.String(), "rangeStart": subnet.Addr().Next().Next().Next().String(),
			"routes": []any{map[string]any{"dst": "0.0.0.0/0"}}, "resolvConf": resolv, "dataDir": filepath.Join(n.dir, "host-local")},
	}}})
	pod := c.tp.PodNS(t, "delegated")
	out, err := n.cnitool(t, "add", pod)
	if err != nil {
		t.Fatalf("ADD with host-local returning a default route: %v\n%s", err, out)
	}
	var res struct {
		Routes []struct{ Dst string }         `json:"routes"`
		DNS    struct{ Nameservers []string } `json:"dns"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	defaults := 0
	for _, r := range res.Routes {
		if r.Dst == "0.0.0.0/0" {
			defaults++
		}
	}
	if defaults != 1 || len(res.DNS.Nameservers) != 1 || res.DNS.Nameservers[0] != "10.96.0.10" {
		t.Errorf("result has %d default routes and DNS %v, want one and host-local's 10.96.0.10:\n%s", defaults, res.DNS.Nameservers, out)
	}
	if got := strings.TrimSpace(RunIn(t, pod, "ip", "route", "show", "default")); strings.Count(got, "\n") != 0 || !strings.Contains(got, "via "+subnet.Addr().Next().String()) {
		t.Errorf("pod's default routes %q, want one via the gateway", got)
	}
	if err := Ping(pod, subnet.Addr().Next()); err != nil {
		t.Errorf("pod cannot reach its gateway: %v", err)
	}
	n.del(t, pod)
}

// TestHairpinByDefault: the pod's bridge port has hairpin on unless the
// conflist says otherwise, as kube-flannel's conflist has it, so a pod can
// reach itself through a Service.
func TestHairpinByDefault(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, nil)
	n.add(t, c.tp.PodNS(t, "a"))
	out := n.Run(t, "bridge", "-d", "link", "show", "master", "weft0")
	if !strings.Contains(out, "hairpin on") {
		t.Fatalf("pod's bridge port without hairpin:\n%s", out)
	}
}

// TestCheckSeesTheNodeSide: CHECK fails when the pod is cut off on the
// node's side (its veth end taken off the bridge, or the bridge without its
// gateway), not only when the pod's own interface changed.
func TestCheckSeesTheNodeSide(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, nil)
	pod := c.tp.PodNS(t, "a")
	n.add(t, pod)
	if out, err := n.cnitool(t, "check", pod); err != nil {
		t.Fatalf("CHECK of a healthy pod: %v %s", err, out)
	}
	port := strings.Fields(n.Run(t, "ip", "-o", "link", "show", "master", "weft0"))[1]
	port = strings.TrimSuffix(strings.Split(port, "@")[0], ":")
	n.Run(t, "ip", "link", "set", port, "nomaster")
	if out, err := n.cnitool(t, "check", pod); err == nil || !strings.Contains(err.Error()+out, "not a port of weft0") {
		t.Errorf("CHECK with the pod's veth off the bridge: %v %s, want it to fail naming weft0", err, out)
	}
	n.Run(t, "ip", "link", "set", port, "master", "weft0")
	gw := n.subnet(t).Addr().Next().String() + "/" + fmt.Sprint(n.subnet(t).Bits())
	n.Run(t, "ip", "addr", "del", gw, "dev", "weft0")
	if out, err := n.cnitool(t, "check", pod); err == nil || !strings.Contains(err.Error()+out, "gateway") {
		t.Errorf("CHECK with the gateway gone from the bridge: %v %s, want it to fail", err, out)
	}
}

// TestLegacyIptablesFastPath: on a node whose iptables is iptables-legacy,
// an ADD on a set-up node starts no iptables process (the rules cannot be
// read in-process as with nf_tables; the daemon's check keeps them), while
// the first ADD does set the rules up through iptables-legacy.
func TestLegacyIptablesFastPath(t *testing.T) {
	if _, err := exec.LookPath("iptables-legacy"); err != nil {
		SkipUnlessRequired(t, "iptables-legacy not installed")
	}
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, map[string]any{"peerSyncInterval": 60})
	wrappers, calls := t.TempDir(), filepath.Join(t.TempDir(), "calls")
	for _, name := range []string{"iptables", "iptables-save", "iptables-restore"} {
		legacy := strings.Replace(name, "iptables", "iptables-legacy", 1)
		script := fmt.Sprintf("#!/bin/sh\necho %s \"$@\" >>%s\nexec %s \"$@\"\n", name, calls, legacy)
		if err := os.WriteFile(filepath.Join(wrappers, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path := "PATH=" + wrappers + ":" + os.Getenv("PATH")
	if out, err := n.cnitool(t, "add", c.tp.PodNS(t, "first"), path); err != nil {
		t.Fatalf("first ADD: %v %s", err, out)
	}
	if out := n.Run(t, "iptables-legacy", "-t", "nat", "-S", "POSTROUTING"); !strings.Contains(out, "-j WEFT-POSTRTG") {
		t.Fatalf("first ADD left no legacy nat jump:\n%s", out)
	}
	if err := os.Remove(calls); err != nil {
		t.Fatalf("the first ADD ran no iptables (wrappers not used?): %v", err)
	}
	if out, err := n.cnitool(t, "add", c.tp.PodNS(t, "second"), path); err != nil {
		t.Fatalf("second ADD: %v %s", err, out)
	}
	if data, err := os.ReadFile(calls); err == nil {
		t.Errorf("an ADD on a set-up legacy node ran iptables:\n%s", data)
	}
}

// TestLegacyNATOfOthersKeepsRepairs: another program's x_tables nat table
// (a kube-proxy in legacy mode) beside weft's nf_tables rules: an ADD still
// puts weft's jump back in front when docker's rule displaced it.
func TestLegacyNATOfOthersKeepsRepairs(t *testing.T) {
	if _, err := exec.LookPath("iptables-legacy"); err != nil {
		SkipUnlessRequired(t, "iptables-legacy not installed")
	}
	if out, _ := exec.Command("iptables", "--version").Output(); !strings.Contains(string(out), "nf_tables") {
		SkipUnlessRequired(t, "the machine's iptables is not iptables-nft: "+strings.TrimSpace(string(out)))
	}
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, map[string]any{"peerSyncInterval": 60})
	n.add(t, c.tp.PodNS(t, "first"))
	n.Run(t, "iptables-legacy", "-t", "nat", "-N", "KUBE-LEGACY") // an x_tables nat table now exists
	n.Run(t, "iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-s", n.subnet(t).String(), "!", "-o", "docker0", "-j", "MASQUERADE")
	n.add(t, c.tp.PodNS(t, "second"))
	if rules := n.natRules(t); len(rules) < 2 || !strings.Contains(rules[1], "-j WEFT-POSTRTG") {
		t.Errorf("the ADD left docker's rule in front of weft's jump: %q", rules)
	}
}
