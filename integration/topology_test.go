//go:build integration

package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ownerDir records, per topology prefix, the pid of the test process that
// owns it, so that a later run can sweep what a killed run left behind.
const ownerDir = "/run/weft-integration"

// killTimeout bounds how long teardown waits for killed processes to go.
const killTimeout = 10 * time.Second

// Topology is a set of network namespaces built for one test: segments
// (a bridge each), hosts with veths into them, and pod namespaces. Every
// namespace is named "<Prefix><something>", with a Prefix unique to the
// run, and nothing is ever created in the root network namespace.
type Topology struct {
	Prefix string // "wft" + 6 hex digits + "-"

	t     testing.TB
	mu    sync.Mutex
	names []string // namespaces created, in order
	hosts []*Host
	pods  []string
}

// Segment is one L2 segment: a namespace holding a bridge "br0".
type Segment struct {
	Name  string
	tp    *Topology
	ns    string
	ports int
}

// Host is a namespace with lo and one veth "eth0" into a segment; Attach
// adds more. It has only the connected routes of its addresses.
type Host struct {
	Name string
	Addr netip.Prefix // address of eth0
	Seg  *Segment     // segment of eth0
	tp   *Topology
	ns   string
}

// NewTopology returns an empty topology with a fresh prefix. Everything it
// creates (namespaces, and any process still inside them) is removed when
// t's cleanup runs, pass or fail. It skips the test when not run as root.
func NewTopology(t testing.TB) *Topology {
	t.Helper()
	RequireRoot(t)
	sweepStale(t)
	tp := &Topology{Prefix: newPrefix(t), t: t}
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		t.Fatalf("creating %s: %v", ownerDir, err)
	}
	owner := filepath.Join(ownerDir, tp.Prefix)
	if err := os.WriteFile(owner, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatalf("recording topology owner: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			tp.dump()
		}
		if err := teardownPrefix(tp.Prefix); err != nil {
			t.Errorf("tearing down topology %s: %v", tp.Prefix, err)
			return
		}
		os.Remove(owner)
	})
	return tp
}

// RequireRoot skips the test unless it runs as root with iproute2.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipUnlessRequired(t, "integration tests need root (network namespaces, bridges, iptables): "+
			"run `sudo go test -tags integration ./integration/`")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		SkipUnlessRequired(t, "integration tests need iproute2's `ip`")
	}
}

// SkipUnlessRequired skips the test for want of why, or fails it when
// WEFT_REQUIRE_INTEGRATION is set (CI sets it), so a CI run can never go
// green with integration tests quietly skipped.
func SkipUnlessRequired(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("WEFT_REQUIRE_INTEGRATION") != "" {
		t.Fatal("WEFT_REQUIRE_INTEGRATION is set, yet: " + why)
	}
	t.Skip(why)
}

// newPrefix returns "wft<6 hex>-" not used by any existing namespace.
func newPrefix(t testing.TB) string {
	for range 10 {
		b := make([]byte, 3)
		rand.Read(b)
		p := "wft" + hex.EncodeToString(b) + "-"
		names, err := listNS(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(names) == 0 {
			return p
		}
	}
	t.Fatal("no free namespace prefix")
	return ""
}

// addNS creates the namespace <Prefix><name> with lo up.
func (tp *Topology) addNS(t testing.TB, name string) string {
	t.Helper()
	ns := tp.Prefix + name
	tp.mu.Lock()
	dup := slices.Contains(tp.names, ns)
	if !dup {
		tp.names = append(tp.names, ns)
	}
	tp.mu.Unlock()
	if dup {
		t.Fatalf("namespace %s already exists in this topology", ns)
	}
	ipCmd(t, "netns", "add", ns)
	ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	return ns
}

// Segment creates the namespace <Prefix>seg-<name> with a bridge br0, up.
func (tp *Topology) Segment(name string) *Segment {
	tp.t.Helper()
	s := &Segment{Name: name, tp: tp, ns: tp.addNS(tp.t, "seg-"+name)}
	ipCmd(tp.t, "-n", s.ns, "link", "add", "br0", "type", "bridge")
	ipCmd(tp.t, "-n", s.ns, "link", "set", "br0", "up")
	return s
}

// NS returns the segment's netns name.
func (s *Segment) NS() string { return s.ns }

// port returns a fresh name for a bridge port of host.
func (s *Segment) port(host string) string {
	s.tp.mu.Lock()
	defer s.tp.mu.Unlock()
	s.ports++
	p := fmt.Sprintf("p%d-%s", s.ports, host)
	if len(p) > 15 { // IFNAMSIZ-1
		p = p[:15]
	}
	return p
}

// Host creates the namespace <Prefix><name> with lo up and eth0 on seg with
// addr, up. Its only routes are the connected ones.
func (tp *Topology) Host(name string, seg *Segment, addr netip.Prefix) *Host {
	tp.t.Helper()
	h := &Host{Name: name, Addr: addr, Seg: seg, tp: tp, ns: tp.addNS(tp.t, name)}
	tp.mu.Lock()
	tp.hosts = append(tp.hosts, h)
	tp.mu.Unlock()
	h.Attach(tp.t, seg, "eth0", addr)
	return h
}

// Router creates a host with eth0 on a and eth1 on b and IPv4 forwarding on.
// Hosts on either side still need a route through it (Host.AddRoute).
func (tp *Topology) Router(name string, a *Segment, addrA netip.Prefix, b *Segment, addrB netip.Prefix) *Host {
	tp.t.Helper()
	r := tp.Host(name, a, addrA)
	r.Attach(tp.t, b, "eth1", addrB)
	r.Sysctl(tp.t, "net.ipv4.ip_forward", "1")
	return r
}

// PodNS creates an empty namespace <Prefix>pod-<name> (lo up) and returns
// its path, /var/run/netns/<Prefix>pod-<name>. It is removed when t's
// cleanup runs (or the topology's, whichever comes first), and so are the
// results cnitool cached for it on the host (forgetCNIResults).
func (tp *Topology) PodNS(t testing.TB, name string) string {
	t.Helper()
	ns := tp.addNS(t, "pod-"+name)
	tp.mu.Lock()
	tp.pods = append(tp.pods, ns)
	tp.mu.Unlock()
	path := filepath.Join(netnsDir, ns)
	t.Cleanup(func() {
		if err := errors.Join(deleteNS(ns), forgetCNIResults(path)); err != nil {
			t.Errorf("removing pod namespace: %v", err)
		}
	})
	return path
}

// cniResultsDir is where cnitool caches the result of each ADD until its
// DEL: libcni's default cache dir, on the host, shared by every test and
// runtime of the machine (cnitool v1.3.0 has no option to move it).
const cniResultsDir = "/var/lib/cni/results"

// forgetCNIResults removes the results cnitool cached for the namespace at
// path, <network>-<cnitoolID(path)>-<ifname>: a pod whose namespace goes
// without a DEL (most tests end so) would leave them on the host for good.
// It is for cleanups only: a DEL of a pod whose namespace is gone, as a
// runtime makes after a reboot, reads its cached result.
func forgetCNIResults(path string) error {
	files, err := filepath.Glob(filepath.Join(cniResultsDir, "*-"+cnitoolID(path)+"-*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing cached CNI result: %w", err))
		}
	}
	return errors.Join(errs...)
}

// StartEtcd runs bin/weft-devetcd in h, serving on http://<h's IP>:2379
// with a data dir removed after the test, waits until it is ready and
// returns its endpoint.
func (tp *Topology) StartEtcd(t testing.TB, h *Host) string {
	t.Helper()
	_, ep := tp.StartEtcdDir(t, h, t.TempDir())
	return ep
}

// StartEtcdDir is StartEtcd with a given data dir, and returns the process
// too, so a test can stop etcd and start it again on the same data.
func (tp *Topology) StartEtcdDir(t testing.TB, h *Host, dataDir string) (*Proc, string) {
	t.Helper()
	url := "http://" + netip.AddrPortFrom(h.IP(), 2379).String()
	p := h.Start(t, Bin(t, "weft-devetcd"), "--data-dir", dataDir, "--listen-client-urls", url)
	line := p.WaitLine(t, 60*time.Second, "ready ")
	return p, strings.TrimPrefix(line, "ready ")
}

// NS returns the host's netns name.
func (h *Host) NS() string { return h.ns }

// Path returns the host's netns path, /var/run/netns/<name>.
func (h *Host) Path() string { return filepath.Join(netnsDir, h.ns) }

// IP returns the address of eth0.
func (h *Host) IP() netip.Addr { return h.Addr.Addr() }

// Run runs args in the host; see RunIn.
func (h *Host) Run(t testing.TB, args ...string) string {
	t.Helper()
	return RunIn(t, h, args...)
}

// Try runs args in the host; see TryIn.
func (h *Host) Try(args ...string) (string, error) { return TryIn(h, args...) }

// Start starts args in the background in the host; see StartIn.
func (h *Host) Start(t testing.TB, args ...string) *Proc {
	t.Helper()
	return StartIn(t, h, args...)
}

// Cmd returns an unstarted `ip netns exec` command in the host, for callers
// that need their own stdin or environment (a CNI plugin invocation).
func (h *Host) Cmd(ctx context.Context, args ...string) *exec.Cmd {
	return nsCommand(ctx, h.ns, args)
}

// Ping sends one ICMP echo to ip from the host.
func (h *Host) Ping(ip netip.Addr) error { return Ping(h, ip) }

// Attach adds a veth ifname in h, with addr, whose peer is a port of seg's
// bridge; both ends up.
func (h *Host) Attach(t testing.TB, seg *Segment, ifname string, addr netip.Prefix) {
	t.Helper()
	port := seg.port(h.Name)
	ipCmd(t, "-n", h.ns, "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", seg.ns)
	ipCmd(t, "-n", seg.ns, "link", "set", port, "master", "br0")
	ipCmd(t, "-n", seg.ns, "link", "set", port, "up")
	ipCmd(t, "-n", h.ns, "addr", "add", addr.String(), "dev", ifname)
	ipCmd(t, "-n", h.ns, "link", "set", ifname, "up")
}

// Reboot simulates the host rebooting: every process in its namespace is
// killed and the namespace deleted with all its links, routes, rules and
// sysctls, then created again as Host made it (lo up, eth0 on the same
// segment with the same address). What lives on disk is the caller's to keep
// or wipe.
func (h *Host) Reboot(t testing.TB) {
	t.Helper()
	if err := deleteNS(h.ns); err != nil {
		t.Fatalf("rebooting %s: %v", h.Name, err)
	}
	ipCmd(t, "netns", "add", h.ns)
	ipCmd(t, "-n", h.ns, "link", "set", "lo", "up")
	h.Attach(t, h.Seg, "eth0", h.Addr)
}

// KillPod removes a pod's namespace, as a reboot does: its interfaces go
// with it, without any DEL.
func KillPod(t testing.TB, path string) {
	t.Helper()
	if err := deleteNS(filepath.Base(path)); err != nil {
		t.Fatalf("removing pod namespace %s: %v", path, err)
	}
}

// AddRoute adds a route to dst via a gateway in the host.
func (h *Host) AddRoute(t testing.TB, dst netip.Prefix, via netip.Addr) {
	t.Helper()
	ipCmd(t, "-n", h.ns, "route", "add", dst.String(), "via", via.String())
}

// Sysctl sets a sysctl (e.g. "net.ipv4.ip_forward") in the host's netns.
func (h *Host) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	if !strings.HasPrefix(key, "net.") { // only net.* is per namespace
		t.Fatalf("sysctl %s is not per network namespace: it would change the machine", key)
	}
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	h.Run(t, "sh", "-c", `printf '%s\n' "$1" > "$2"`, "sh", value, path)
}

// ipCmd runs `ip args...` from the test process. Callers always pass -n or
// netns verbs: nothing may be created in the root namespace.
func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
}

// dump logs addresses and routes of every host and pod, for a failed test.
func (tp *Topology) dump() {
	tp.mu.Lock()
	names := slices.Clone(tp.names)
	tp.mu.Unlock()
	for _, ns := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err != nil || strings.HasPrefix(ns, tp.Prefix+"seg-") {
			continue // a pod removed by its own cleanup already, or a segment
		}
		addrs, _ := TryIn(ns, "ip", "-br", "addr")
		routes, _ := TryIn(ns, "ip", "route")
		rules, _ := TryIn(ns, "iptables", "-t", "nat", "-L", "POSTROUTING", "-v", "-n")
		tp.t.Logf("netns %s:\n%s%s%s", ns, addrs, routes, rules)
	}
}

// listNS returns the names of the namespaces starting with prefix.
func listNS(prefix string) ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// teardownPrefix removes every namespace starting with prefix, killing the
// processes inside first, and the results cnitool cached for them (a host
// namespace may serve as a pod's), and checks that none is left.
func teardownPrefix(prefix string) error {
	names, err := listNS(prefix)
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range names {
		errs = append(errs, deleteNS(ns), forgetCNIResults(filepath.Join(netnsDir, ns)))
	}
	if left, err := listNS(prefix); err != nil || len(left) > 0 {
		errs = append(errs, err, fmt.Errorf("namespaces left: %v", left))
	}
	return errors.Join(errs...)
}

// deleteNS kills every process in the namespace (including those started
// with a bare `ip netns exec`) and deletes it. A missing namespace is fine.
func deleteNS(ns string) error {
	path := filepath.Join(netnsDir, ns)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	deadline := time.Now().Add(killTimeout)
	tick := time.NewTicker(20 * time.Millisecond) // poll while the kernel reaps them
	defer tick.Stop()
	for {
		pids, err := nsPids(path)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v in netns %s survive SIGKILL", pids, ns)
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		<-tick.C
	}
	if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %w: %s", ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// nsPids returns the processes whose network namespace is the one bound at
// path (what `ip netns pids` does). Zombies are left out: they hold no
// namespace and go when their parent reaps them.
func nsPids(path string) ([]int, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing /proc: %w", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && link == want {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// sweepStale tears down the topologies of test processes that died without
// cleaning up (killed, or a `go test -timeout` panic).
func sweepStale(t testing.TB) {
	entries, err := os.ReadDir(ownerDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		owner := filepath.Join(ownerDir, e.Name())
		b, err := os.ReadFile(owner)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil && syscall.Kill(pid, 0) != syscall.ESRCH {
			continue // still running
		}
		if err := teardownPrefix(e.Name()); err != nil {
			t.Logf("sweeping stale topology %s: %v", e.Name(), err)
			continue
		}
		t.Logf("swept stale topology %s left by pid %d", e.Name(), pid)
		os.Remove(owner)
	}
}
