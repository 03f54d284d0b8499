package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/weft-cni/weft/pkg/nodelease"
	"github.com/weft-cni/weft/pkg/route"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

type daemonRig struct {
	d      *Daemon
	cfg    *Config
	store  *fakeStore
	kernel *fakeRoutes
	ipt    *fakeIPT
	node   *fakeNode
	clock  *clockwork.FakeClock
	cancel context.CancelFunc
	done   chan error
}

func newDaemonRig(t *testing.T, args ...string) *daemonRig {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "subnet.env")
	cfg, err := ParseFlags("weft daemon", append([]string{"--subnet-file=" + path}, args...), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	r := &daemonRig{cfg: cfg, store: newFakeStore(t, "172.7.0.0/16"), ipt: newFakeIPT(),
		kernel: newFakeRoutes(via("172.7.40.0/24", "10.4.7.40")), // stale, from before a restart
		node:   &fakeNode{path: path}, clock: clockwork.NewFakeClock()}
	r.d, err = New(cfg, Deps{Store: r.store, Routes: r.kernel, IPT: r.ipt, Node: r.node, Clock: r.clock, Log: discard,
		Identity: func() (nodelease.Identity, error) {
			return nodelease.Identity{PublicIP: ip(selfIP), Iface: "eth0", MTU: 1500}, nil
		},
		HoldsAddr: func(id nodelease.Identity) (bool, error) { return id.PublicIP == ip(selfIP), nil }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *daemonRig) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.d.Run(ctx) }()
	t.Cleanup(r.stop)
}

// stop cancels Run, as a signal does, and returns its error.
func (r *daemonRig) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	if err := <-r.done; err != nil {
		panic("Run returned " + err.Error())
	}
}

func (r *daemonRig) get(path string) (int, string) {
	rec := httptest.NewRecorder()
	r.d.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func (r *daemonRig) advance() { r.clock.Advance(maxBackoff * 2) }

// waitReady waits for /readyz to answer 200, moving the clock on.
func (r *daemonRig) waitReady(t *testing.T) {
	t.Helper()
	eventually(t, "/readyz 200", func() bool { code, _ := r.get("/readyz"); return code == http.StatusOK }, r.advance)
}

// subnetFile reads the subnet file the daemon wrote.
func (r *daemonRig) subnetFile(t *testing.T) *subnetfile.File {
	t.Helper()
	file, err := subnetfile.Read(r.cfg.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	return file
}

func noEnv(string) (string, bool) { return "", false }

func TestDaemonLifecycle(t *testing.T) {
	r := newDaemonRig(t)
	r.store.put(pfx("172.7.22.0/24"), "10.4.7.22", 2)
	r.store.setDown(true)
	r.start(t)

	if code, body := r.get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q while etcd is down, want 200", code, body)
	}
	eventually(t, "a failed acquisition", func() bool {
		return metricValue(t, r.d.metrics.Registry(), "weft_reconcile_errors_total", "kind", "lease") > 0
	}, nil)
	if code, body := r.get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no subnet lease") {
		t.Errorf("/readyz before the lease = %d %q, want 503 naming the lease", code, body)
	}
	if _, err := os.Stat(r.cfg.SubnetFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("subnet file exists before the lease: %v", err)
	}

	r.store.setDown(false)
	r.waitReady(t)

	file := r.subnetFile(t)
	own, ok := r.store.get(file.Lease())
	if !ok || own.Attrs.PublicIP != ip(selfIP) || own.Reservation() {
		t.Fatalf("subnet file names %v, etcd holds %+v", file.Lease(), own)
	}
	if file.MTU != 1500 || !file.IPMasq || file.Network != pfx("172.7.0.0/16") {
		t.Errorf("subnet file = %+v", file)
	}
	// /readyz turns 200 as soon as the last check passes; the bridge is
	// marked by the node loop that this kicks, a moment later.
	eventually(t, "the bridge's ready mark", func() bool { marks, _ := r.node.marks(); return len(marks) > 0 }, nil)
	marks, fileAtMark := r.node.marks()
	if marks[0] != file.Lease() || slices.Contains(fileAtMark, false) {
		t.Errorf("bridge marked ready for %v, with the subnet file present each time: %v", marks, fileAtMark)
	}
	eventually(t, "routes", func() bool {
		return slices.Equal(r.kernelRoutes(), []route.Route{via("172.7.22.0/24", "10.4.7.22")})
	}, nil)
	if post := r.ipt.rules("nat", "POSTROUTING"); len(post) == 0 || post[0] != weftJump {
		t.Errorf("POSTROUTING = %q", post)
	}
	code, body := r.get("/metrics")
	for _, name := range []string{"weft_lease_expiry_timestamp_seconds", "weft_peers 1", "weft_routes_programmed 1",
		"weft_reconcile_errors_total", "weft_watch_restarts_total", "weft_rule_repairs_total", "weft_ready 1"} {
		if code != http.StatusOK || !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %q (status %d)", name, code)
		}
	}

	// A node joins while the daemon runs; then the daemon stops as on SIGTERM.
	r.store.put(pfx("172.7.23.0/24"), "10.4.7.23", 3)
	eventually(t, "route to the joining node", func() bool { return r.kernel.has("172.7.23.0/24") }, nil)
	r.stop()
	if got := r.kernelRoutes(); len(got) != 2 {
		t.Errorf("routes after stop = %v, want both left in place", got)
	}
	if post := r.ipt.rules("nat", "POSTROUTING"); len(post) == 0 {
		t.Error("rules removed on stop")
	}
	if _, ok := r.store.get(file.Lease()); !ok {
		t.Error("lease released on stop")
	}
}

func (r *daemonRig) kernelRoutes() []route.Route {
	out, _ := r.kernel.List(pfx("172.7.0.0/16"))
	slices.SortFunc(out, func(a, b route.Route) int { return a.Dst.Addr().Compare(b.Dst.Addr()) })
	return out
}

func TestDaemonChangesNodeUnderLock(t *testing.T) {
	r := newDaemonRig(t)
	probe := newLockProbe()
	r.kernel.probe, r.ipt.probe, r.node.probe = probe, probe, probe
	r.d.lock = probe.lock
	unlock, _ := probe.lock(context.Background()) // a plugin ADD holds the lock
	r.store.put(pfx("172.7.22.0/24"), "10.4.7.22", 2)
	r.start(t)
	eventually(t, "the lease", func() bool { return r.d.state.get().own != nil }, nil)
	if ok, _ := r.d.Ready(); ok {
		t.Error("ready while the node lock is held elsewhere")
	}
	unlock()
	eventually(t, "ready", func() bool { ok, _ := r.d.Ready(); return ok }, r.advance)
	takes, violations := probe.report()
	if takes < 4 || len(violations) > 0 {
		t.Errorf("lock taken %d times; changes made without it: %q", takes, violations)
	}
}

func TestDaemonKeepsSubnetAcrossRestart(t *testing.T) {
	r := newDaemonRig(t)
	r.start(t)
	eventually(t, "ready", func() bool { ok, _ := r.d.Ready(); return ok }, nil)
	before := r.subnetFile(t)
	r.stop()
	// The lease expires while the daemon is down; it comes back to the file's subnet.
	own, _ := r.store.get(before.Lease())
	r.store.expire(own.EtcdLease)
	again, err := New(r.cfg, Deps{Store: r.store, Routes: r.kernel, IPT: r.ipt, Node: r.node, Clock: r.clock, Log: discard,
		Identity: r.d.identity, HoldsAddr: r.d.holds})
	if err != nil {
		t.Fatal(err)
	}
	r.d = again
	r.start(t)
	eventually(t, "ready again", func() bool { ok, _ := r.d.Ready(); return ok }, nil)
	after, err := subnetfile.Read(r.cfg.SubnetFile)
	if err != nil || after.Lease() != before.Lease() {
		t.Errorf("subnet after restart = %v (%v), want %v", after, err, before.Lease())
	}
}

func TestDaemonRepairsRulesWhileEtcdAway(t *testing.T) {
	r := newDaemonRig(t)
	if err := subnetfile.Write(r.cfg.SubnetFile, subnetfile.ForLease(pfx("172.7.0.0/16"), pfx("172.7.21.0/24"), 1500, true)); err != nil {
		t.Fatal(err)
	}
	r.store.setDown(true)
	r.ipt.insertRaw("nat", "POSTROUTING", 1, dockerMasq...)
	r.start(t)
	eventually(t, "rules from the subnet file's network", func() bool {
		post := r.ipt.rules("nat", "POSTROUTING")
		return len(post) == 2 && post[0] == weftJump
	}, nil)
	if ok, why := r.d.Ready(); ok || !strings.Contains(strings.Join(why, ";"), "no subnet lease") {
		t.Errorf("ready = %v %q with etcd away", ok, why)
	}
}

func TestDaemonServesHealth(t *testing.T) {
	port := freePort(t)
	r := newDaemonRig(t, "--healthz-ip=127.0.0.1", "--healthz-port="+strconv.Itoa(port))
	r.start(t)
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	var code int
	eventually(t, "/readyz 200 over HTTP", func() bool {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		code = resp.StatusCode
		return code == http.StatusOK
	}, nil)
}

func TestDaemonHealthPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	r := newDaemonRig(t, "--healthz-ip=127.0.0.1", "--healthz-port="+strconv.Itoa(port))
	err = r.d.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "serving health checks") {
		t.Errorf("Run = %v, want a bind error", err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestDaemonIdentityRetried(t *testing.T) {
	r := newDaemonRig(t)
	var mu sync.Mutex
	calls := 0
	r.d.identity = func() (nodelease.Identity, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls < 3 {
			return nodelease.Identity{}, errors.New("iface eth0: no such link (fake)")
		}
		return nodelease.Identity{PublicIP: ip(selfIP), Iface: "eth0", MTU: 1500}, nil
	}
	r.start(t)
	eventually(t, "ready after the interface appears", func() bool { ok, _ := r.d.Ready(); return ok }, r.advance)
}

// TestDaemonNotReadyWhileLeaseLost: the node's key deleted in etcd while
// acquiring again keeps failing (here the network config turned to a
// backend the daemon cannot run): the lease counts as lost, not held until
// its last expiry, so /readyz says so and weft_lease_held is 0.
func TestDaemonNotReadyWhileLeaseLost(t *testing.T) {
	r := newDaemonRig(t)
	r.start(t)
	r.waitReady(t)
	file := r.subnetFile(t)
	udp := *r.store.network
	udp.Backend.Type = "udp"
	r.store.setNetwork(&udp)
	r.store.del(file.Lease())
	eventually(t, "/readyz 503 naming the lost lease", func() bool {
		code, body := r.get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "lost")
	}, r.advance)
	if _, body := r.get("/metrics"); !strings.Contains(body, "weft_lease_held 0") {
		t.Error("weft_lease_held is not 0 while the lease is lost")
	}
}

// TestDaemonNoticesItsAddressChange: the interface's address changes under
// the running daemon (DHCP, an operator). Peers still route this node's
// pods to the address it advertises, so the node turns not ready, naming
// both addresses; when the address comes back it is ready again. With
// --public-ip (which may be an address NAT maps to the node) nothing is
// checked.
func TestDaemonNoticesItsAddressChange(t *testing.T) {
	for _, explicit := range []bool{false, true} {
		var args []string
		if explicit {
			args = []string{"--public-ip=" + selfIP}
		}
		r := newDaemonRig(t, args...)
		var mu sync.Mutex
		addr := selfIP
		r.d.identity = func() (nodelease.Identity, error) {
			mu.Lock()
			defer mu.Unlock()
			return nodelease.Identity{PublicIP: ip(addr), Iface: "eth0", MTU: 1500}, nil
		}
		asked := 0
		r.d.holds = func(id nodelease.Identity) (bool, error) { // eth0 holds one address
			mu.Lock()
			defer mu.Unlock()
			asked++
			return id.PublicIP == ip(addr), nil
		}
		setAddr := func(a string) { mu.Lock(); addr = a; mu.Unlock() }
		r.start(t)
		r.waitReady(t)

		setAddr("10.4.7.31")
		if explicit {
			// Three more resyncs (each sets the bridge up again), none of
			// which asks the interface, and the node stays ready.
			r.node.mu.Lock()
			ensured := len(r.node.ensured)
			r.node.mu.Unlock()
			eventually(t, "three more resyncs", func() bool {
				r.node.mu.Lock()
				defer r.node.mu.Unlock()
				return len(r.node.ensured) >= ensured+3
			}, func() { r.clock.Advance(r.cfg.RouteResync) })
			mu.Lock()
			n := asked
			mu.Unlock()
			if code, body := r.get("/readyz"); code != http.StatusOK || n != 0 {
				t.Fatalf("with --public-ip: /readyz = %d %q and the interface asked %d times after its address changed, want 200 and none", code, body, n)
			}
			r.stop()
			continue
		}
		eventually(t, "/readyz 503 naming both addresses", func() bool {
			code, body := r.get("/readyz")
			return code == http.StatusServiceUnavailable && strings.Contains(body, "eth0 now has 10.4.7.31") &&
				strings.Contains(body, "advertises "+selfIP)
		}, func() { r.clock.Advance(r.cfg.RouteResync) })
		setAddr(selfIP)
		eventually(t, "/readyz 200 again", func() bool { code, _ := r.get("/readyz"); return code == http.StatusOK },
			func() { r.clock.Advance(r.cfg.RouteResync) })
		r.stop()
	}
}

// TestDaemonNoticesANetworkConfigChange: the network config in etcd
// changes under the running daemon (a Network widened). The daemon applies
// it only at its next restart, as flanneld, so from the next full sync on
// the node is not ready and says what changed; a config that differs only
// in naming the default backend changes nothing, and the old config back
// makes it ready again.
func TestDaemonNoticesANetworkConfigChange(t *testing.T) {
	r := newDaemonRig(t)
	r.start(t)
	r.waitReady(t)
	relist := func() { r.clock.Advance(r.cfg.Relist) }

	r.store.setNetwork(parseNetwork(`{"Network":"172.6.0.0/15","Backend":{"Type":"host-gw"}}`))
	eventually(t, "/readyz 503 naming both networks", func() bool {
		code, body := r.get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "etcd now says Network 172.6.0.0/15") &&
			strings.Contains(body, "this daemon runs Network 172.7.0.0/16")
	}, relist)

	r.store.setNetwork(parseNetwork(`{"Network":"172.7.0.0/16"}`)) // host-gw by default: the same network
	eventually(t, "/readyz 200 again", func() bool { code, _ := r.get("/readyz"); return code == http.StatusOK }, relist)
}

// TestDaemonConfigErrClearsOnReacquire: the network config changes in etcd
// (the node turns not ready), then the node's key vanishes and the keeper
// acquires again, under the new config: the daemon now runs etcd's config,
// so the node is ready again without waiting for the next full sync.
func TestDaemonConfigErrClearsOnReacquire(t *testing.T) {
	r := newDaemonRig(t)
	r.start(t)
	r.waitReady(t)
	file := r.subnetFile(t)
	wide := parseNetwork(`{"Network":"172.6.0.0/15","Backend":{"Type":"host-gw"}}`)
	r.store.setNetwork(wide)
	eventually(t, "/readyz 503 naming the config", func() bool {
		code, body := r.get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "network config")
	}, func() { r.clock.Advance(r.cfg.Relist) })

	r.store.del(file.Lease()) // no clock advance from here on: no full sync is due
	eventually(t, "a lease under the new config", func() bool {
		snap := r.d.state.get()
		return snap.network != nil && snap.network.Network == wide.Network
	}, nil)
	eventually(t, "/readyz 200 once the new config runs", func() bool { code, _ := r.get("/readyz"); return code == http.StatusOK }, nil)
}

// TestDaemonAddressCheckKeepsAdvertisedAddress: the interface the daemon
// resolves first, or the first address on it, changes while the address
// it advertises stays on its interface (an earlier --iface candidate that
// had no address at start gained one; another address before it on the
// interface). Peers still reach the node: it stays ready.
func TestDaemonAddressCheckKeepsAdvertisedAddress(t *testing.T) {
	for _, tc := range []struct {
		name string
		// at start and later: what ResolveIdentity finds
		start, later nodelease.Identity
	}{
		{name: "an earlier --iface candidate gained an address",
			start: nodelease.Identity{PublicIP: ip("10.5.0.21"), Iface: "eth1", MTU: 1500},
			later: nodelease.Identity{PublicIP: ip(selfIP), Iface: "eth0", MTU: 1500}},
		{name: "another first address on the interface",
			start: nodelease.Identity{PublicIP: ip(selfIP), Iface: "eth0", MTU: 1500},
			later: nodelease.Identity{PublicIP: ip("10.9.9.21"), Iface: "eth0", MTU: 1500}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newDaemonRig(t)
			var mu sync.Mutex
			cur := tc.start
			r.d.identity = func() (nodelease.Identity, error) {
				mu.Lock()
				defer mu.Unlock()
				return cur, nil
			}
			r.d.holds = func(id nodelease.Identity) (bool, error) { return id == tc.start, nil }
			r.start(t)
			r.waitReady(t)
			mu.Lock()
			cur = tc.later
			mu.Unlock()
			for range 3 {
				r.clock.Advance(r.cfg.RouteResync)
				time.Sleep(10 * time.Millisecond) // let the node loop run
				if code, body := r.get("/readyz"); code != http.StatusOK {
					t.Fatalf("/readyz = %d %q while %s still holds %s", code, body, tc.start.Iface, tc.start.PublicIP)
				}
			}
		})
	}
}
