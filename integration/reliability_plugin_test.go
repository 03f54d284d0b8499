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
	"sync"
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
func (n *node) pluginCmd(t testing.TB, ctx context.Context, verb, id, netns string, conf []byte) (*exec.Cmd, *bytes.Buffer) {
	cmd := n.Cmd(ctx, "env", "CNI_COMMAND="+verb, "CNI_CONTAINERID="+id, "CNI_NETNS="+netns,
		"CNI_IFNAME=eth0", "CNI_PATH="+filepath.Dir(Bin(t, "weft")), Bin(t, "weft"))
	cmd.Stdin = bytes.NewReader(conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	return cmd, &out
}

// call runs verb and returns the plugin's stdout (with stderr on failure).
func (n *node) call(t testing.TB, verb, id, netns string, conf []byte) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd, out := n.pluginCmd(t, ctx, verb, id, netns, conf)
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", verb, id, err, out.String())
	}
	return out.String(), nil
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

// killIterations is how many ADDs TestReliabilityKillDuringAdd kills
// (WEFT_KILL_ITERATIONS overrides; the soak script raises it); the test
// stops early, with what it did, after killBudget (WEFT_KILL_BUDGET, a Go
// duration, overrides).
func killIterations() int {
	if v, err := strconv.Atoi(os.Getenv("WEFT_KILL_ITERATIONS")); err == nil && v > 0 {
		return v
	}
	return 100
}

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
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, nil)
	conf := n.netconf(t, 0, nil) // a full node sync inside every ADD: more to interrupt
	pod := c.tp.PodNS(t, "warm")
	start := time.Now()
	if _, err := n.call(t, "ADD", "warm", pod, conf); err != nil {
		t.Fatal(err)
	}
	if _, err := n.call(t, "DEL", "warm", pod, conf); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if _, err := n.call(t, "ADD", "warm", pod, conf); err != nil {
		t.Fatal(err)
	}
	addTime := time.Since(start)
	if _, err := n.call(t, "DEL", "warm", pod, conf); err != nil {
		t.Fatal(err)
	}
	rules := n.ruleCount(t)
	subnet := n.subnet(t)
	t.Logf("an undisturbed ADD takes %s; kills land in 0..%s", addTime, addTime)

	deadline := time.Now().Add(killBudget())
	killed, completed, viaGC, iters := 0, 0, 0, 0
	for i := range killIterations() {
		if time.Now().After(deadline) {
			break
		}
		iters++
		id := fmt.Sprintf("kill-%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
		cmd, out := n.pluginCmd(t, ctx, "ADD", id, pod, conf)
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		delay := time.Duration(rand.Int64N(int64(addTime) + 1))
		timer := time.AfterFunc(delay, func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
		err := cmd.Wait()
		timer.Stop()
		cancel()
		var exitErr *exec.ExitError
		switch {
		case err == nil:
			completed++
		case errors.As(err, &exitErr) && exitErr.Sys().(syscall.WaitStatus).Signaled():
			killed++
		default:
			t.Fatalf("iteration %d: ADD failed on its own: %v\n%s", i, err, out)
		}
		if i%4 == 3 {
			// The runtime lost the container: its namespace goes, GC frees the rest.
			viaGC++
			if err := deleteNS(nsName(pod)); err != nil {
				t.Fatal(err)
			}
			if err := n.gc(t, conf, nil); err != nil {
				t.Fatalf("iteration %d: GC: %v", i, err)
			}
			pod = c.tp.PodNS(t, fmt.Sprintf("k%d", i))
			// The kernel frees a deleted namespace's veths asynchronously.
			WaitFor(t, 10*time.Second, "veths of the removed namespace gone", func() (bool, error) { return veths(t, n) == 0, nil })
		} else if _, err := n.call(t, "DEL", id, pod, conf); err != nil {
			t.Fatalf("iteration %d: DEL after the kill: %v", i, err)
		}
		if a, v, r := n.allocations(t), veths(t, n), n.ruleCount(t); a != 0 || v != 0 || r != rules {
			t.Fatalf("iteration %d (killed after %s): %d addresses, %d veths, %d rules (want 0, 0, %d) left",
				i, delay, a, v, r, rules)
		}
		if _, err := TryIn(pod, "ip", "link", "show", "eth0"); err == nil {
			t.Fatalf("iteration %d: eth0 left in the pod", i)
		}
		res, err := n.call(t, "ADD", id, pod, conf)
		if err != nil {
			t.Fatalf("iteration %d: ADD of the same attachment after the kill: %v", i, err)
		}
		if ip := resultIP(t, res); !subnet.Contains(ip) {
			t.Fatalf("iteration %d: re-ADD got %s outside %s", i, ip, subnet)
		}
		if _, err := n.call(t, "DEL", id, pod, conf); err != nil {
			t.Fatalf("iteration %d: final DEL: %v", i, err)
		}
	}
	if iters < 20 {
		t.Fatalf("only %d iterations in %s", iters, killBudget())
	}
	if a, v := n.allocations(t), veths(t, n); a != 0 || v != 0 {
		t.Fatalf("at the end: %d addresses and %d veths left", a, v)
	}
	t.Logf("RESULT kill-during-add: %d ADDs interrupted (%d killed, %d finished before the kill), %d cleaned by GC, %d by DEL; leaked addresses 0, veths 0, extra rules 0",
		iters, killed, completed, viaGC, iters-viaGC)
}

// TestReliabilityLoad: 20 workers run 500 ADD/DEL operations on one node
// while GC runs in a loop; no address is ever held twice, and at the end
// the store holds exactly the live pods.
func TestReliabilityLoad(t *testing.T) {
	const workers, cycles = 20, 13 // 13 ADDs and 12 DEL-or-orphans each: 500 operations
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, nil)
	conf := n.netconf(t, 60, nil)
	pods := make([]string, workers)
	for w := range pods {
		pods[w] = c.tp.PodNS(t, fmt.Sprintf("l%d", w))
	}
	warm := c.tp.PodNS(t, "lwarm") // the first ADD sets the node up
	if _, err := n.call(t, "ADD", "lwarm", warm, conf); err != nil {
		t.Fatal(err)
	}
	if _, err := n.call(t, "DEL", "lwarm", warm, conf); err != nil {
		t.Fatal(err)
	}

	var (
		mu      sync.Mutex
		holders = map[netip.Addr]string{} // address -> container ID holding it now
		live    = map[string]netip.Addr{}
		done    = map[string]bool{} // DEL'd, or orphaned and no longer valid
		orphans = map[string]netip.Addr{}
		dups    []string
		ops     int
	)
	id := func(w, k int) string { return fmt.Sprintf("load-%d-%d", w, k) }
	stop := make(chan struct{})
	gcs, gcFreed := 0, 0
	var gcErr error
	var gcWG sync.WaitGroup
	gcWG.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond) // a runtime's GC period, compressed
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			mu.Lock()
			var keep []string
			for w := range workers {
				for k := range cycles {
					if !done[id(w, k)] {
						keep = append(keep, id(w, k))
					}
				}
			}
			for o, ip := range orphans { // freed by this GC: no longer held
				delete(holders, ip)
				delete(orphans, o)
				gcFreed++
			}
			mu.Unlock()
			if err := n.gc(t, conf, keep); err != nil {
				gcErr = err
				return
			}
			gcs++
		}
	})

	start := time.Now()
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for k := range cycles {
				cid := id(w, k)
				out, err := n.call(t, "ADD", cid, pods[w], conf)
				if err != nil {
					errs <- err
					return
				}
				ip := resultIP(t, out)
				mu.Lock()
				ops++
				if other, held := holders[ip]; held {
					dups = append(dups, fmt.Sprintf("%s given to %s while %s holds it", ip, cid, other))
				}
				holders[ip], live[cid] = cid, ip
				mu.Unlock()
				if k == cycles-1 {
					return // the last pod of each worker stays
				}
				mu.Lock()
				delete(live, cid)
				orphan := k%5 == 4
				if !orphan {
					delete(holders, ip)
				}
				mu.Unlock()
				if orphan {
					// The container vanished without a DEL: only GC frees its address.
					if _, err := TryIn(pods[w], "ip", "link", "del", "eth0"); err != nil {
						errs <- err
						return
					}
				} else if _, err := n.call(t, "DEL", cid, pods[w], conf); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				ops++
				done[cid] = true
				if orphan {
					orphans[cid] = ip
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	gcWG.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if gcErr != nil {
		t.Errorf("GC: %v", gcErr)
	}
	for _, d := range dups {
		t.Error(d)
	}
	if t.Failed() {
		t.FailNow()
	}
	// One last GC, as a runtime's periodic one, frees the remaining orphans.
	var keep []string
	for cid := range live {
		keep = append(keep, cid)
	}
	if err := n.gc(t, conf, keep); err != nil {
		t.Fatal(err)
	}
	got := n.store(t)
	if len(got) != len(live) {
		t.Errorf("store holds %d addresses, %d pods live", len(got), len(live))
	}
	for cid, ip := range live {
		if got[cid] != ip {
			t.Errorf("store has %s for %s, the pod has %s", got[cid], cid, ip)
		}
	}
	if v := veths(t, n); v != len(live) {
		t.Errorf("%d veths for %d live pods", v, len(live))
	}
	t.Logf("RESULT load: %d ADD/DEL operations by %d workers in %s (%.0f ops/s) with %d concurrent GCs (%d orphans freed); duplicates 0; store = %d live pods",
		ops, workers, elapsed.Round(time.Millisecond), float64(ops)/elapsed.Seconds(), gcs, gcFreed, len(live))
	if ops != 500 {
		t.Errorf("%d operations, want 500", ops)
	}
	for cid := range live {
		w, _, _ := strings.Cut(strings.TrimPrefix(cid, "load-"), "-")
		wi, _ := strconv.Atoi(w)
		if _, err := n.call(t, "DEL", cid, pods[wi], conf); err != nil {
			t.Error(err)
		}
	}
	if a, v := n.allocations(t), veths(t, n); a != 0 || v != 0 {
		t.Errorf("after deleting every pod: %d addresses, %d veths", a, v)
	}
}
