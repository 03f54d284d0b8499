//go:build integration

package integration

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The seed addresses of DESIGN.md's test topology.
var (
	etcdAddr   = netip.MustParsePrefix("10.4.7.12/24")
	node21Addr = netip.MustParsePrefix("10.4.7.21/24")
	node22Addr = netip.MustParsePrefix("10.4.7.22/24")
)

func TestTopologySmoke(t *testing.T) {
	RequireRoot(t)
	rootLinksBefore := rootLinks(t)
	tp := NewTopology(t)
	seg := tp.Segment("lan")
	etcdHost := tp.Host("etcd", seg, etcdAddr)
	n21 := tp.Host("node21", seg, node21Addr)
	n22 := tp.Host("node22", seg, node22Addr)
	pod := tp.PodNS(t, "a")

	ep := tp.StartEtcd(t, etcdHost)
	if ep != "http://10.4.7.12:2379" {
		t.Errorf("etcd endpoint %q, want http://10.4.7.12:2379", ep)
	}

	for _, c := range []struct {
		from *Host
		to   netip.Addr
	}{{n21, n22.IP()}, {n22, n21.IP()}, {n21, etcdHost.IP()}, {n22, etcdHost.IP()}} {
		if err := c.from.Ping(c.to); err != nil {
			t.Errorf("ping %s from %s: %v", c.to, c.from.Name, err)
		}
	}
	if err := Ping(pod, n21.IP()); err == nil {
		t.Errorf("an unattached pod namespace reached %s", n21.IP())
	}

	etcdAP := netip.AddrPortFrom(etcdHost.IP(), 2379)
	for _, h := range []*Host{n21, n22} {
		if err := Connect(h, etcdAP); err != nil {
			t.Errorf("TCP to etcd from %s: %v", h.Name, err)
		}
	}
	if _, err := exec.LookPath("etcdctl"); err == nil {
		etcdctl := []string{"env", "ETCDCTL_API=3", "etcdctl", "--endpoints", ep}
		n21.Run(t, append(etcdctl, "endpoint", "health")...) // fails the test if unhealthy
		n21.Run(t, append(etcdctl, "put", "/weft-smoke", "from-node21")...)
		if got := n22.Run(t, append(etcdctl, "get", "--print-value-only", "/weft-smoke")...); strings.TrimSpace(got) != "from-node21" {
			t.Errorf("etcdctl get from node22: %q, want from-node21", got)
		}
	} else {
		t.Log("etcdctl not installed: checked etcd by TCP connect only")
	}

	if got := SourceIPSeen(t, n22, n22.IP(), n21); got != n21.IP() {
		t.Errorf("node22 saw source %s, want %s", got, n21.IP())
	}

	routes := Routes(t, n21)
	if strings.TrimSpace(routes) != "10.4.7.0/24 dev eth0 proto kernel scope link src 10.4.7.21" {
		t.Errorf("node21 routes, want only the segment's:\n%s", routes)
	}

	// Nothing may show up in the root namespace.
	for l := range rootLinks(t) {
		if !rootLinksBefore[l] {
			t.Errorf("link %s appeared in the root namespace", l)
		}
	}
}

func TestTopologyTeardown(t *testing.T) {
	RequireRoot(t)
	var prefix string
	var pids []int
	t.Run("build", func(t *testing.T) {
		tp := NewTopology(t)
		prefix = tp.Prefix
		seg := tp.Segment("lan")
		h1 := tp.Host("node21", seg, node21Addr)
		h2 := tp.Host("node22", seg, node22Addr)
		pod := tp.PodNS(t, "a")

		pids = append(pids, h1.Start(t, "sleep", "300").Pid())
		// Processes that escaped any handle of ours: daemonised by a shell
		// run with a plain `ip netns exec`.
		escape := "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!"
		for _, out := range []string{h2.Run(t, "sh", "-c", escape), RunIn(t, pod, "sh", "-c", escape)} {
			pid, err := strconv.Atoi(strings.TrimSpace(out))
			if err != nil {
				t.Fatalf("pid %q: %v", out, err)
			}
			pids = append(pids, pid)
		}
		if names, _ := listNS(prefix); len(names) != 4 {
			t.Errorf("namespaces %v, want 4", names)
		}
	})
	if prefix == "" {
		t.Fatal("the build subtest did not run")
	}

	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	if strings.Contains(string(out), prefix) {
		t.Errorf("namespaces with prefix %s left after cleanup:\n%s", prefix, out)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d survived the cleanup", pid)
		}
	}
	if _, err := os.Stat(ownerDir + "/" + prefix); err == nil {
		t.Errorf("owner record of %s left", prefix)
	}
}

func TestTopologySweepsStale(t *testing.T) {
	RequireRoot(t)
	// A topology whose owner is a process that has exited.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	prefix := newPrefix(t)
	ns := prefix + "stale"
	ipCmd(t, "netns", "add", ns)
	t.Cleanup(func() { deleteNS(ns) })
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ownerDir+"/"+prefix, []byte(strconv.Itoa(dead.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}

	NewTopology(t)
	if names, _ := listNS(prefix); len(names) != 0 {
		t.Errorf("stale namespaces %v not swept", names)
	}
}

// rootLinks returns the names of the links of the root namespace (read only).
func rootLinks(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatalf("ip link: %v", err)
	}
	links := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			links[strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]] = true
		}
	}
	return links
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) == syscall.ESRCH {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestTopologyRouted checks the vxlan layout: a second segment behind a
// router namespace.
func TestTopologyRouted(t *testing.T) {
	tp := NewTopology(t)
	lanA, lanB := tp.Segment("a"), tp.Segment("b")
	r := tp.Router("router", lanA, netip.MustParsePrefix("10.4.7.1/24"), lanB, netip.MustParsePrefix("10.4.8.1/24"))
	n21 := tp.Host("node21", lanA, node21Addr)
	n31 := tp.Host("node31", lanB, netip.MustParsePrefix("10.4.8.31/24"))
	if err := n21.Ping(n31.IP()); err == nil {
		t.Fatal("reached the other segment without a route")
	}
	n21.AddRoute(t, netip.MustParsePrefix("10.4.8.0/24"), netip.MustParseAddr("10.4.7.1"))
	n31.AddRoute(t, netip.MustParsePrefix("10.4.7.0/24"), netip.MustParseAddr("10.4.8.1"))
	if err := n21.Ping(n31.IP()); err != nil {
		t.Errorf("ping across the router: %v", err)
	}
	if got := SourceIPSeen(t, n31, n31.IP(), n21); got != n21.IP() {
		t.Errorf("node31 saw %s, want %s (a router does not NAT)", got, n21.IP())
	}
	if got := strings.TrimSpace(r.Run(t, "cat", "/proc/sys/net/ipv4/ip_forward")); got != "1" {
		t.Errorf("router ip_forward = %q", got)
	}
}
