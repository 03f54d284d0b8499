//go:build integration

package integration

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Helpers of TestReliabilityLoad (reliability_plugin_test.go). The workers
// and the GC loop run in goroutines: what they call reports errors by
// returning them, never by t.Fatal.

// loadWorkers run loadCycles ADDs each, and a DEL or an orphaned pod after
// all but the last: 13 ADDs and 12 DEL-or-orphans each, 500 operations.
const loadWorkers, loadCycles = 20, 13

// loadID is the container ID of worker w's k-th pod.
func loadID(w, k int) string { return fmt.Sprintf("load-%d-%d", w, k) }

// loadWorkerOf is the worker that added the container loadID named cid.
func loadWorkerOf(cid string) int {
	w, _, _ := strings.Cut(strings.TrimPrefix(cid, "load-"), "-")
	wi, _ := strconv.Atoi(w)
	return wi
}

// loadTest is the state of TestReliabilityLoad: the node and its netconf,
// a pod namespace per worker, and what the workers and the GC loop know of
// the node's addresses, shared under mu.
type loadTest struct {
	n    *node
	conf []byte
	pods []string // worker -> its pod namespace
	// gc runs the GC loop beside the workers; without it only a full
	// subnet's reclaim frees the orphans' addresses.
	gc bool

	mu      sync.Mutex
	holders map[netip.Addr]string // address -> container ID holding it now
	live    map[string]netip.Addr
	done    map[string]bool // DEL'd, or orphaned and no longer valid
	orphans map[string]netip.Addr
	dups    []string
	ops     int

	gcs     int   // GCs run; the GC loop's own, read once it has stopped
	gcFreed int   // orphans freed by GCs, under mu
	gcErr   error // the GC loop's error, read once it has stopped
}

// newLoadTest starts a one-node cluster on network, creates each worker's
// pod namespace, and sets the node up with a first ADD and DEL.
func newLoadTest(t *testing.T, network string, gc bool) *loadTest {
	c := newCluster(t, network)
	n := c.node(t, "node21", node21Addr, nil)
	Bin(t, "weft") // a missing binary skips (or fails) here, not in a worker goroutine
	l := &loadTest{
		n: n, conf: n.netconf(t, 60, nil), pods: make([]string, loadWorkers), gc: gc,
		holders: map[netip.Addr]string{}, live: map[string]netip.Addr{},
		done: map[string]bool{}, orphans: map[string]netip.Addr{},
	}
	for w := range l.pods {
		l.pods[w] = c.tp.PodNS(t, fmt.Sprintf("l%d", w))
	}
	n.addDel(t, "lwarm", c.tp.PodNS(t, "lwarm"), l.conf) // the first ADD sets the node up
	return l
}

// run runs the workers while the GC loop runs and returns how long the
// workers took. An error of a worker or of the GC loop, or any address
// given to two pods at once, fails the test there.
func (l *loadTest) run(t *testing.T) time.Duration {
	stop := make(chan struct{})
	var gcWG sync.WaitGroup
	if l.gc {
		gcWG.Go(func() { l.gcLoop(t, stop) })
	}

	start := time.Now()
	errs := make(chan error, loadWorkers)
	var wg sync.WaitGroup
	for w := range loadWorkers {
		wg.Go(func() {
			if err := l.worker(t, w); err != nil {
				errs <- err
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
	if l.gcErr != nil {
		t.Errorf("GC: %v", l.gcErr)
	}
	for _, d := range l.dups {
		t.Error(d)
	}
	if t.Failed() {
		t.FailNow()
	}
	return elapsed
}

// gcLoop runs GC every 100ms (a runtime's GC period, compressed) until stop
// is closed, each time with the attachments still valid. It stops at the
// first error, left in gcErr.
func (l *loadTest) gcLoop(t testing.TB, stop <-chan struct{}) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if err := l.n.gc(t, l.conf, l.keepForGC()); err != nil {
			l.gcErr = err
			return
		}
		l.gcs++
	}
}

// keepForGC returns the attachments a GC must keep: those neither DEL'd
// nor orphaned. The orphans known now are freed by that GC: their
// addresses are no longer held, and they count in gcFreed.
func (l *loadTest) keepForGC() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var keep []string
	for w := range loadWorkers {
		for k := range loadCycles {
			if !l.done[loadID(w, k)] {
				keep = append(keep, loadID(w, k))
			}
		}
	}
	for o, ip := range l.orphans {
		delete(l.holders, ip)
		delete(l.orphans, o)
		l.gcFreed++
	}
	return keep
}

// worker runs worker w's loadCycles ADDs in its pod. Every pod but the
// last is then removed: DEL'd, or every fifth one orphaned. It returns the
// first error.
func (l *loadTest) worker(t testing.TB, w int) error {
	for k := range loadCycles {
		cid := loadID(w, k)
		ip, err := l.add(t, w, cid)
		if err != nil {
			return err
		}
		if k == loadCycles-1 {
			return nil // the last pod of each worker stays
		}
		if err := l.remove(t, w, cid, ip, k%5 == 4); err != nil {
			return err
		}
	}
	return nil
}

// add ADDs cid in worker w's pod and records it live with its address,
// noting a duplicate if another container holds that address now.
func (l *loadTest) add(t testing.TB, w int, cid string) (netip.Addr, error) {
	out, err := l.n.call(t, "ADD", cid, l.pods[w], l.conf)
	if err != nil {
		return netip.Addr{}, err
	}
	ip, err := resultAddr(out)
	if err != nil {
		return netip.Addr{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops++
	if other, held := l.holders[ip]; held {
		l.dups = append(l.dups, fmt.Sprintf("%s given to %s while %s holds it", ip, cid, other))
	}
	l.holders[ip], l.live[cid] = cid, ip
	return ip, nil
}

// remove takes cid, at ip in worker w's pod, out of the live pods and DELs
// it; an orphan instead vanishes without a DEL (its eth0 deleted), so its
// address stays held until a GC frees it, or, without the GC loop, until a
// full subnet reclaims it. Then cid is no longer valid.
func (l *loadTest) remove(t testing.TB, w int, cid string, ip netip.Addr, orphan bool) error {
	l.mu.Lock()
	delete(l.live, cid)
	if !orphan || !l.gc {
		delete(l.holders, ip)
	}
	l.mu.Unlock()
	if orphan {
		if _, err := TryIn(l.pods[w], "ip", "link", "del", "eth0"); err != nil {
			return err
		}
	} else if _, err := l.n.call(t, "DEL", cid, l.pods[w], l.conf); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops++
	l.done[cid] = true
	if orphan && l.gc {
		l.orphans[cid] = ip
	}
	return nil
}

// checkStore runs one last GC, as a runtime's periodic one, which frees
// the remaining orphans, then checks that the IPAM store holds exactly the
// live pods with their addresses and that the node has a veth per live pod.
func (l *loadTest) checkStore(t *testing.T) {
	var keep []string
	for cid := range l.live {
		keep = append(keep, cid)
	}
	if err := l.n.gc(t, l.conf, keep); err != nil {
		t.Fatal(err)
	}
	got := l.n.store(t)
	if len(got) != len(l.live) {
		t.Errorf("store holds %d addresses, %d pods live", len(got), len(l.live))
	}
	for cid, ip := range l.live {
		if got[cid] != ip {
			t.Errorf("store has %s for %s, the pod has %s", got[cid], cid, ip)
		}
	}
	if v := veths(t, l.n); v != len(l.live) {
		t.Errorf("%d veths for %d live pods", v, len(l.live))
	}
}

// delLive DELs every live pod and checks that the node is left with no
// address and no veth.
func (l *loadTest) delLive(t *testing.T) {
	for cid := range l.live {
		if _, err := l.n.call(t, "DEL", cid, l.pods[loadWorkerOf(cid)], l.conf); err != nil {
			t.Error(err)
		}
	}
	if a, v := l.n.allocations(t), veths(t, l.n); a != 0 || v != 0 {
		t.Errorf("after deleting every pod: %d addresses, %d veths", a, v)
	}
}
