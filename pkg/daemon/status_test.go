package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-cni/weft/pkg/ipam"
	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/masq"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/nodelease"
	"github.com/weft-cni/weft/pkg/route"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

type statusRig struct {
	cfg    *Config
	store  *fakeStore
	kernel *fakeRoutes
	ipt    *fakeIPT
	bridge Bridge
	deps   StatusDeps
}

// newStatusRig is node 21 with everything in place: its lease, the subnet
// file, a route to node 22 and the rules.
func newStatusRig(t *testing.T) *statusRig {
	t.Helper()
	path := filepath.Join(t.TempDir(), "subnet.env")
	cfg, err := ParseFlags("weft status", []string{"--subnet-file=" + path}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	r := &statusRig{cfg: cfg, store: newFakeStore(t, "172.7.0.0/16"), ipt: newFakeIPT(),
		kernel: newFakeRoutes(bridgeRoute, via("172.7.22.0/24", "10.4.7.22"))}
	r.store.put(pfx("172.7.21.0/24"), selfIP, 1)
	r.store.put(pfx("172.7.22.0/24"), "10.4.7.22", 2)
	if err := subnetfile.Write(path, subnetfile.ForLease(pfx("172.7.0.0/16"), pfx("172.7.21.0/24"), 1500, true)); err != nil {
		t.Fatal(err)
	}
	if _, err := masq.Ensure(r.ipt, masq.Rules{Network: pfx("172.7.0.0/16"), IPMasq: true}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r.bridge = Bridge{Name: "weft0", Addrs: []netip.Prefix{pfx("172.7.21.1/24")}, MAC: "0a:58:ac:07:15:01", MACFixed: true,
		Pods: 2, Lease: pfx("172.7.21.0/24"), Synced: now.Add(-10 * time.Second)}
	r.deps = StatusDeps{Store: r.store, Routes: r.kernel, IPT: r.ipt, Now: now,
		Identity: func() (nodelease.Identity, error) {
			return nodelease.Identity{PublicIP: ip(selfIP), Iface: "eth0", MTU: 1500}, nil
		},
		Bridge: func() (Bridge, error) { return r.bridge, nil }}
	return r
}

func (r *statusRig) report(t *testing.T) (*Report, string) {
	t.Helper()
	rep := Status(context.Background(), r.cfg, r.deps)
	var b strings.Builder
	if _, err := rep.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return rep, b.String()
}

// expect runs the report and checks its verdict and that it says each of
// wants.
func (r *statusRig) expect(t *testing.T, ok bool, wants ...string) {
	t.Helper()
	rep, out := r.report(t)
	if rep.OK() != ok {
		t.Errorf("OK() = %v, want %v\n%s", rep.OK(), ok, out)
	}
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestStatus(t *testing.T) {
	tests := []struct {
		name  string
		harm  func(*statusRig)
		ok    bool
		wants []string
	}{
		{name: "all well", ok: true, harm: func(*statusRig) {},
			wants: []string{"ok    subnet file", "172.7.21.1/24", "172.7.21.0/24 for 10.4.7.21: expires",
				"172.7.22.0/24 via 10.4.7.22: route present", "iptables rules in place",
				"ok    bridge", "weft0: [172.7.21.1/24], MAC 0a:58:ac:07:15:01, 2 pod(s), last sync with etcd 10s ago", "status: ok"}},
		{name: "bridge not created yet", ok: true,
			harm:  func(r *statusRig) { r.bridge = Bridge{Name: "weft0", Missing: true} },
			wants: []string{"ok    bridge", "weft0 not created yet"}},
		{name: "bridge marked degraded", ok: true,
			harm:  func(r *statusRig) { r.bridge.Retry = r.deps.Now.Add(10 * time.Second) },
			wants: []string{"ok    bridge", "etcd was unreachable at the last sync; ADDs use the subnet file until"}},
		{name: "bridge MAC left to the kernel",
			harm:  func(r *statusRig) { r.bridge.MACFixed, r.bridge.MAC = false, "06:38:7a:3c:60:89" },
			wants: []string{"FAIL  bridge", "MAC 06:38:7a:3c:60:89 is not the fixed one"}},
		{name: "bridge without the gateway",
			harm:  func(r *statusRig) { r.bridge.Addrs = []netip.Prefix{pfx("172.7.30.1/24")} },
			wants: []string{"FAIL  bridge", "addresses [172.7.30.1/24], want the gateway 172.7.21.1/24"}},
		{name: "bridge set up for another lease",
			harm:  func(r *statusRig) { r.bridge.Lease = pfx("172.7.30.0/24") },
			wants: []string{"FAIL  bridge", "set up for lease 172.7.30.0/24, the subnet file says 172.7.21.0/24"}},
		{name: "bridge unreadable",
			harm: func(r *statusRig) {
				r.deps.Bridge = func() (Bridge, error) { return Bridge{}, errors.New("netlink: permission denied") }
			},
			wants: []string{"FAIL  bridge", "permission denied"}},
		{name: "route missing",
			harm:  func(r *statusRig) { r.kernel.Delete(via("172.7.22.0/24", "10.4.7.22")) },
			wants: []string{"FAIL  peer", "172.7.22.0/24 via 10.4.7.22: route missing or wrong (none)", "status: 1 problem(s)"}},
		{name: "route to the wrong node",
			harm:  func(r *statusRig) { r.kernel.Replace(via("172.7.22.0/24", "10.4.7.99")) },
			wants: []string{"route missing or wrong (have 172.7.22.0/24 via 10.4.7.99)"}},
		{name: "stale route",
			harm:  func(r *statusRig) { r.kernel.Replace(via("172.7.40.0/24", "10.4.7.40")) },
			wants: []string{"FAIL  stale route", "172.7.40.0/24 via 10.4.7.40: no lease holds this subnet"}},
		{name: "docker's rule above ours",
			harm:  func(r *statusRig) { r.ipt.insertRaw("nat", "POSTROUTING", 1, dockerMasq...) },
			wants: []string{"FAIL  rules", "jump to WEFT-POSTRTG is not first in nat POSTROUTING"}},
		{name: "no lease",
			harm:  func(r *statusRig) { r.store.del(pfx("172.7.21.0/24")) },
			wants: []string{"FAIL  lease", "no lease in etcd for 10.4.7.21"}},
		{name: "lease not renewed",
			harm:  func(r *statusRig) { r.deps.Now = time.Now().Add(DefaultLeaseTTL - 59*time.Minute) },
			wants: []string{"FAIL  lease", "not being renewed"}},
		{name: "subnet file disagrees",
			harm: func(r *statusRig) {
				_ = subnetfile.Write(r.cfg.SubnetFile, subnetfile.ForLease(pfx("172.7.0.0/16"), pfx("172.7.30.0/24"), 1500, true))
			},
			wants: []string{"holds 172.7.30.0/24 but etcd leases 172.7.21.0/24"}},
		{name: "etcd down: file, routes and rules still checked",
			harm:  func(r *statusRig) { r.store.setDown(true) },
			wants: []string{"FAIL  etcd", "ok    subnet file", "172.7.22.0/24 via 10.4.7.22 (peers not checked", "iptables rules in place"}},
		{name: "network config changed in etcd",
			harm: func(r *statusRig) {
				r.store.setNetwork(parseNetwork(`{"Network":"172.6.0.0/15","Backend":{"Type":"host-gw"}}`))
			},
			wants: []string{"FAIL  subnet file", "network 172.7.0.0/16, but etcd's network config says 172.6.0.0/15"}},
		{name: "network config changed, node identity unknown",
			harm: func(r *statusRig) {
				r.store.setNetwork(parseNetwork(`{"Network":"172.6.0.0/15","Backend":{"Type":"host-gw"}}`))
				r.deps.Identity = func() (nodelease.Identity, error) { return nodelease.Identity{}, errors.New("no interface eth0") }
			},
			wants: []string{"FAIL  node", "FAIL  subnet file", "etcd's network config says 172.6.0.0/15"}},
		{name: "peer outside --public-ip-cidr is not expected", ok: true,
			harm: func(r *statusRig) {
				r.cfg.PublicIPCIDR = pfx("10.4.7.0/24")
				r.store.put(pfx("172.7.50.0/24"), "192.168.9.9", 3)
			},
			wants: []string{"ok    peers", "1", "status: ok"}},
		{name: "ipam in use", ok: true,
			harm:  func(r *statusRig) { r.deps.IPAM = ipamUsage(37, 0, false, nil) },
			wants: []string{"ok    ipam", "37 of 253 addresses of 172.7.21.0/24 in use (network weft)", "status: ok"}},
		{name: "ipam with pods gone without a DEL", ok: true,
			harm:  func(r *statusRig) { r.deps.IPAM = ipamUsage(253, 7, false, nil) },
			wants: []string{"ok    ipam", "253 of 253 addresses", "7 held by pods gone without a DEL (no veth on the node), freed when the subnet fills: c0/eth0, c1/eth0, c2/eth0, c3/eth0, c4/eth0, and 2 more"}},
		{name: "ipam full of running pods",
			harm:  func(r *statusRig) { r.deps.IPAM = ipamUsage(253, 0, false, nil) },
			wants: []string{"FAIL  ipam", "172.7.21.0/24 full: all 253 addresses held by running pods"}},
		{name: "ipam full, gone holders unknown",
			harm: func(r *statusRig) {
				full := ipamUsage(253, 0, false, nil)
				r.deps.IPAM = func(subnet netip.Prefix) (ipam.Usage, error) {
					u, err := full(subnet)
					u.GoneUnknown = errors.New("veth9: port of weft0 carries no weft pod mark")
					return u, err
				}
			},
			wants: []string{"FAIL  ipam", "172.7.21.0/24 full: all 253 addresses held, and none is freed", "veth9"}},
		{name: "ipam store not found", ok: true,
			harm:  func(r *statusRig) { r.deps.IPAM = ipamUsage(0, 0, true, nil) },
			wants: []string{"ok    ipam", "no allocations in /var/lib/cni/weft/weft yet"}},
		{name: "ipam store unreadable",
			harm:  func(r *statusRig) { r.deps.IPAM = ipamUsage(0, 0, false, errors.New("corrupt ipam state: line 3")) },
			wants: []string{"FAIL  ipam", "/var/lib/cni/weft/weft: corrupt ipam state: line 3"}},
		{name: "daemon not ready",
			harm: func(r *statusRig) {
				r.deps.Readyz = func(context.Context) (bool, string, error) { return false, "503 not ready: no subnet lease yet", nil }
			},
			wants: []string{"FAIL  daemon", "503 not ready"}},
		{name: "daemon unreachable",
			harm: func(r *statusRig) {
				r.deps.Readyz = func(context.Context) (bool, string, error) { return false, "", errors.New("connection refused") }
			},
			wants: []string{"FAIL  daemon", "connection refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newStatusRig(t)
			tt.harm(r)
			r.expect(t, tt.ok, tt.wants...)
		})
	}
}

// ipamUsage fakes the IPAM store of a /24 with inUse addresses held, gone
// of them by pods with no veth.
func ipamUsage(inUse, gone int, missing bool, err error) func(netip.Prefix) (ipam.Usage, error) {
	return func(subnet netip.Prefix) (ipam.Usage, error) {
		if subnet != pfx("172.7.21.0/24") {
			return ipam.Usage{}, fmt.Errorf("asked for %s, want the subnet file's lease", subnet)
		}
		u := ipam.Usage{Subnet: subnet, InUse: inUse, Size: 253, Missing: missing}
		for i := range gone {
			u.Gone = append(u.Gone, ipam.Attachment{ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0"})
		}
		return u, err
	}
}

func TestStatusReservation(t *testing.T) {
	r := newStatusRig(t)
	r.store.del(pfx("172.7.21.0/24"))
	r.store.put(pfx("172.7.21.0/24"), selfIP, 0)
	rep, out := r.report(t)
	if !rep.OK() || !strings.Contains(out, "permanent reservation") {
		t.Errorf("reservation report:\n%s", out)
	}
}

// TestStatusVXLAN: on a vxlan network the routes expected are the vxlan
// device's, as the overlay plans them, not host-gw routes via PublicIPs.
func TestStatusVXLAN(t *testing.T) {
	viaDevice := route.Route{Dst: pfx("172.7.22.0/24"), Gateway: ip("172.7.22.0"), LinkIndex: 9, OnLink: true}
	for _, tt := range []struct {
		name    string
		overlay OverlayPlan
		kernel  []route.Route
		ok      bool
		wants   []string
	}{
		{name: "routes through the device", ok: true, kernel: []route.Route{bridgeRoute, viaDevice},
			wants: []string{"172.7.22.0/24 via 172.7.22.0: route present", "status: ok"}},
		{name: "route missing", kernel: []route.Route{bridgeRoute},
			wants: []string{"FAIL  peer", "172.7.22.0/24 via 172.7.22.0: route missing or wrong (none)"}},
		{name: "device missing", kernel: []route.Route{bridgeRoute, viaDevice},
			overlay: func(*netconf.Config, netip.Prefix, netip.Addr, []lease.Lease) ([]route.Route, error) {
				return nil, errors.New("vxlan device: weft.1: Link not found")
			},
			wants: []string{"FAIL  vxlan", "weft.1: Link not found"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newStatusRig(t)
			vx := *r.store.network
			vx.Backend.Type = netconf.BackendVXLAN
			r.store.network = &vx
			r.kernel = newFakeRoutes(tt.kernel...)
			r.deps.Routes = r.kernel
			r.deps.Overlay = tt.overlay
			if r.deps.Overlay == nil {
				r.deps.Overlay = func(_ *netconf.Config, self netip.Prefix, _ netip.Addr, leases []lease.Lease) ([]route.Route, error) {
					if self != pfx("172.7.21.0/24") || len(leases) != 1 || leases[0].Subnet != pfx("172.7.22.0/24") {
						return nil, fmt.Errorf("overlay asked for self %v, peers %v", self, leases)
					}
					return []route.Route{viaDevice}, nil
				}
			}
			r.expect(t, tt.ok, tt.wants...)
		})
	}
}

var _ StatusStore = (*fakeStore)(nil)
