//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Reliability tests (docs/reliability.md): the plugin killed inside ADD,
// and ADD/DEL/GC under load. They call bin/weft directly, one process per
// call as a runtime does, so a call can be killed at any point.

// netconf is the single-plugin netconf matching the node's conflist
// (peerSync as the node's peerSyncInterval), for direct calls.
func (n *node) netconf(t testing.TB, peerSync int, extra map[string]any) []byte {
	t.Helper()
	conf := map[string]any{
		"cniVersion": "1.1.0", "name": "weft", "type": "weft", "iface": "eth0",
		"etcdEndpoints": []string{n.c.endpoint}, "subnetFile": filepath.Join(n.dir, "subnet.env"),
		"peerSyncInterval": peerSync,
		"ipam":             map[string]any{"type": "weft-ipam", "dataDir": filepath.Join(n.dir, "ipam")},
	}
	for k, v := range extra {
		conf[k] = v
	}
	data, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// pluginCmd prepares one call of bin/weft in the node.
func (n *node) pluginCmd(t testing.TB, ctx context.Context, verb, id, netns string, conf []byte) (cmd *exec.Cmd, stdout, stderr *bytes.Buffer) {
	cmd = n.Cmd(ctx, "env", "CNI_COMMAND="+verb, "CNI_CONTAINERID="+id, "CNI_NETNS="+netns,
		"CNI_IFNAME=eth0", "CNI_PATH="+filepath.Dir(Bin(t, "weft")), Bin(t, "weft"))
	cmd.Stdin = bytes.NewReader(conf)
	stdout, stderr = &bytes.Buffer{}, &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	return cmd, stdout, stderr
}

// call runs verb and returns the plugin's stdout (the CNI result or error),
// with its stderr (warnings) in the error on failure.
func (n *node) call(t testing.TB, verb, id, netns string, conf []byte) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd, stdout, stderr := n.pluginCmd(t, ctx, verb, id, netns, conf)
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s%s", verb, id, err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// gc runs GC keeping the given container IDs (interface eth0).
func (n *node) gc(t testing.TB, conf []byte, keep []string) error {
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	valid := make([]map[string]string, 0, len(keep))
	for _, id := range keep {
		valid = append(valid, map[string]string{"containerID": id, "ifname": "eth0"})
	}
	m["cni.dev/valid-attachments"] = valid
	data, _ := json.Marshal(m)
	_, err := n.call(t, "GC", "", "", data)
	return err
}

// store is the node's IPAM state: container ID -> address.
func (n *node) store(t testing.TB) map[string]netip.Addr {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(n.dir, "ipam", "weft", "state"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]netip.Addr{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "ip" {
			m[f[2]] = netip.MustParseAddr(f[1])
		}
	}
	return m
}

// ruleCount is the number of iptables rules in the node (nat and filter).
func (n *node) ruleCount(t testing.TB) int {
	c := 0
	for _, table := range []string{"nat", "filter"} {
		c += strings.Count(n.Run(t, "iptables-save", "-t", table), "\n-A ")
	}
	return c
}

// addDel runs an undisturbed ADD then DEL of id in pod, failing the test on
// error, and returns how long the ADD took.
func (n *node) addDel(t testing.TB, id, pod string, conf []byte) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := n.call(t, "ADD", id, pod, conf); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if _, err := n.call(t, "DEL", id, pod, conf); err != nil {
		t.Fatal(err)
	}
	return took
}

// killIterations is how many ADDs TestReliabilityKillDuringAdd kills
// (WEFT_KILL_ITERATIONS overrides; the soak script raises it); once
// minKillIterations are done, the test stops early, with what it did, after
// killBudget (WEFT_KILL_BUDGET, a Go duration, overrides). The budget only
// bounds the run time: a slow machine runs the minimum, never fails for it.
func killIterations() int {
	if v, err := strconv.Atoi(os.Getenv("WEFT_KILL_ITERATIONS")); err == nil && v > 0 {
		return v
	}
	return 100
}

// minKillIterations are run whatever the budget (fewer only if
// WEFT_KILL_ITERATIONS asks for fewer).
const minKillIterations = 20

func killBudget() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("WEFT_KILL_BUDGET")); err == nil && d > 0 {
		return d
	}
	return 60 * time.Second
}

// TestReliabilityKillDuringAdd: ADD is SIGKILLed after a random delay
// within its undisturbed duration; then DEL (or, every fourth time, the pod
// namespace removed and GC) leaves no address, no veth and no extra rule,
// and the next ADD of the same attachment works.
func TestReliabilityKillDuringAdd(t *testing.T) {
	k := newKillTest(t)
	start := time.Now()
	deadline := start.Add(killBudget())
	for i := range killIterations() {
		if i >= minKillIterations && time.Now().After(deadline) {
			break
		}
		k.iteration(t, i)
	}
	took := time.Since(start)
	t.Logf("%d iterations in %s (%.1f/s; budget %s after the first %d)",
		k.iters, took.Round(time.Millisecond), float64(k.iters)/took.Seconds(), killBudget(), minKillIterations)
	if a, v := k.n.allocations(t), veths(t, k.n); a != 0 || v != 0 {
		t.Fatalf("at the end: %d addresses and %d veths left", a, v)
	}
	t.Logf("RESULT kill-during-add: %d ADDs interrupted (%d killed, %d finished before the kill), %d cleaned by GC, %d by DEL; leaked addresses 0, veths 0, extra rules 0",
		k.iters, k.killed, k.completed, k.viaGC, k.iters-k.viaGC)
}

// killTest is the state of TestReliabilityKillDuringAdd: the node, its
// netconf, the pod namespace in use, the baseline every iteration must
// return to, and the counts the RESULT line reports.
type killTest struct {
	c       *cluster
	n       *node
	conf    []byte
	pod     string        // replaced each time an iteration removes it
	addTime time.Duration // an undisturbed ADD: kills land in 0..addTime
	rules   int           // the node's iptables rules with no pod
	subnet  netip.Prefix

	iters, killed, completed, viaGC int
}

// newKillTest starts a one-node cluster with a full node sync inside every
// ADD (more to interrupt), sets the node up with a first ADD and DEL, and
// times a second, undisturbed one. It records the rule count and subnet
// the iterations are checked against.
func newKillTest(t *testing.T) *killTest {
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, nil)
	k := &killTest{c: c, n: n, conf: n.netconf(t, 0, nil), pod: c.tp.PodNS(t, "warm")}
	n.addDel(t, "warm", k.pod, k.conf)
	k.addTime = n.addDel(t, "warm", k.pod, k.conf)
	k.rules = n.ruleCount(t)
	k.subnet = n.subnet(t)
	t.Logf("an undisturbed ADD takes %s; kills land in 0..%s", k.addTime, k.addTime)
	return k
}

// iteration i kills an ADD, cleans up after it (DEL, or every fourth time
// the pod namespace removed and GC), checks that nothing is left, and
// checks that the same attachment can then be added and deleted.
func (k *killTest) iteration(t *testing.T, i int) {
	k.iters++
	id := fmt.Sprintf("kill-%d", i)
	delay := k.killAdd(t, i, id)
	if i%4 == 3 {
		k.loseAndGC(t, i)
	} else if _, err := k.n.call(t, "DEL", id, k.pod, k.conf); err != nil {
		t.Fatalf("iteration %d: DEL after the kill: %v", i, err)
	}
	k.checkNothingLeft(t, i, delay)
	k.checkReAdd(t, i, id)
}

// killAdd starts ADD of id and SIGKILLs it after a random delay in
// 0..addTime, counting whether the kill landed or ADD finished first. An
// ADD that fails by itself fails the test. It returns the delay.
func (k *killTest) killAdd(t *testing.T, i int, id string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd, out, errOut := k.n.pluginCmd(t, ctx, "ADD", id, k.pod, k.conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	delay := time.Duration(rand.Int64N(int64(k.addTime) + 1))
	timer := time.AfterFunc(delay, func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	err := cmd.Wait()
	timer.Stop()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		k.completed++
	case errors.As(err, &exitErr) && exitErr.Sys().(syscall.WaitStatus).Signaled():
		k.killed++
	default:
		t.Fatalf("iteration %d: ADD failed on its own: %v\n%s%s", i, err, out, errOut)
	}
	return delay
}

// loseAndGC is the runtime losing the container: its namespace goes, GC
// (with no valid attachment) frees the rest. The kernel frees a deleted
// namespace's veths asynchronously and GC keeps the address of a veth that
// still exists (as DEL does), so GC runs once they are gone; a fresh pod
// namespace then takes the old one's place.
func (k *killTest) loseAndGC(t *testing.T, i int) {
	t.Helper()
	k.viaGC++
	if err := deleteNS(nsName(k.pod)); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 10*time.Second, "veths of the removed namespace gone", func() (bool, error) { return veths(t, k.n) == 0, nil })
	if err := k.n.gc(t, k.conf, nil); err != nil {
		t.Fatalf("iteration %d: GC: %v", i, err)
	}
	k.pod = k.c.tp.PodNS(t, fmt.Sprintf("k%d", i))
}

// checkNothingLeft checks that the node holds no address and no veth, has
// its baseline rule count, and that the pod has no eth0.
func (k *killTest) checkNothingLeft(t *testing.T, i int, delay time.Duration) {
	t.Helper()
	if a, v, r := k.n.allocations(t), veths(t, k.n), k.n.ruleCount(t); a != 0 || v != 0 || r != k.rules {
		t.Fatalf("iteration %d (killed after %s): %d addresses, %d veths, %d rules (want 0, 0, %d) left",
			i, delay, a, v, r, k.rules)
	}
	if _, err := TryIn(k.pod, "ip", "link", "show", "eth0"); err == nil {
		t.Fatalf("iteration %d: eth0 left in the pod", i)
	}
}

// checkReAdd checks that the killed attachment can be added again, with an
// address in the node's subnet, and deleted.
func (k *killTest) checkReAdd(t *testing.T, i int, id string) {
	t.Helper()
	res, err := k.n.call(t, "ADD", id, k.pod, k.conf)
	if err != nil {
		t.Fatalf("iteration %d: ADD of the same attachment after the kill: %v", i, err)
	}
	if ip := resultIP(t, res); !k.subnet.Contains(ip) {
		t.Fatalf("iteration %d: re-ADD got %s outside %s", i, ip, k.subnet)
	}
	if _, err := k.n.call(t, "DEL", id, k.pod, k.conf); err != nil {
		t.Fatalf("iteration %d: final DEL: %v", i, err)
	}
}

// TestReliabilityLoad: 20 workers run 500 ADD/DEL operations on one node
// while GC runs in a loop; no address is ever held twice, and at the end
// the store holds exactly the live pods. The helpers are in
// load_helpers_test.go.
func TestReliabilityLoad(t *testing.T) {
	l := newLoadTest(t, seedNetwork, true)
	elapsed := l.run(t)
	l.checkStore(t)
	t.Logf("RESULT load: %d ADD/DEL operations by %d workers in %s (%.0f ops/s) with %d concurrent GCs (%d orphans freed); duplicates 0; store = %d live pods",
		l.ops, loadWorkers, elapsed.Round(time.Millisecond), float64(l.ops)/elapsed.Seconds(), l.gcs, l.gcFreed, len(l.live))
	if l.ops != 500 {
		t.Errorf("%d operations, want 500", l.ops)
	}
	l.delLive(t)
}

// TestReliabilityLoadFullSubnet: the same 500 operations on a /27 (29 pod
// addresses) with no GC at all: the 40 orphans, gone without a DEL, fill
// the subnet beside the 20 pods the workers hold, and only the reclaim of
// a full subnet, racing 20 concurrent ADDs, lets the workers go on. No
// address is ever held by two live pods, no ADD fails, and the store ends
// with exactly the live pods once a last GC frees the orphans left.
func TestReliabilityLoadFullSubnet(t *testing.T) {
	l := newLoadTest(t, `{"Network": "172.7.0.0/16", "SubnetLen": 27, "Backend": {"Type": "host-gw"}}`, false)
	elapsed := l.run(t)
	l.checkStore(t)
	t.Logf("RESULT load, full subnet: %d ADD/DEL operations by %d workers in %s (%.0f ops/s) on a /27 with no GC; duplicates 0; store = %d live pods",
		l.ops, loadWorkers, elapsed.Round(time.Millisecond), float64(l.ops)/elapsed.Seconds(), len(l.live))
	if l.ops != 500 {
		t.Errorf("%d operations, want 500", l.ops)
	}
	l.delLive(t)
}
