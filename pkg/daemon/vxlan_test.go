package daemon

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/route"
	"github.com/weft-cni/weft/pkg/subnetfile"
	"github.com/weft-cni/weft/pkg/vxlan"
)

// TestSyncerVXLAN: on a vxlan network the overlay's routes replace
// host-gw's, and a device that cannot be set up leaves routes alone.
func TestSyncerVXLAN(t *testing.T) {
	stale := via("172.7.40.0/24", "10.4.7.40")
	r := newSyncRig(t, newFakeRoutes(stale))
	vx := *r.store.network
	vx.Backend = netconf.Backend{Type: netconf.BackendVXLAN, VNI: 1, Port: 8472}
	own, _ := r.store.get(pfx("172.7.21.0/24"))
	r.s.state.setLease(&vx, &own, subnetfile.ForLease(vx.Network, own.Subnet, 1450, true))
	r.store.put(pfx("172.7.22.0/24"), "10.4.7.22", 2)

	var deviceOK atomic.Bool
	var seen atomic.Int32
	r.s.overlay = func(network *netconf.Config, self *lease.Lease, leases []lease.Lease, prune bool) ([]route.Route, error) {
		if !deviceOK.Load() {
			return nil, fmt.Errorf("%w: no underlay", vxlan.ErrDevice)
		}
		if network.Backend.Type != netconf.BackendVXLAN || self.Subnet != own.Subnet || !prune {
			t.Errorf("overlay called with %+v, %v, prune %v", network.Backend, self.Subnet, prune)
		}
		seen.Store(int32(len(leases)))
		return []route.Route{{Dst: pfx("172.7.22.0/24"), Gateway: ip("172.7.22.0"), LinkIndex: 9, OnLink: true}}, nil
	}
	r.start(t)
	eventually(t, "a reconcile attempt", func() bool { return r.metric(t, "weft_reconcile_errors_total", "kind", "routes") > 0 }, nil)
	if got := r.routes(); len(got) != 1 || got[0] != stale {
		t.Fatalf("routes changed while the device could not be set up: %v", got)
	}
	if r.syncs.Load() != 0 {
		t.Fatal("routes reported synced without a device")
	}
	deviceOK.Store(true)
	r.s.reconcile(t.Context())
	r.waitRoutes(t, "vxlan route", route.Route{Dst: pfx("172.7.22.0/24"), Gateway: ip("172.7.22.0"), LinkIndex: 9, OnLink: true})
	if n := seen.Load(); n != 2 {
		t.Errorf("overlay saw %d leases, want 2 (self and node 22)", n)
	}
}

// TestSyncerVXLANRoutesMetric: weft_routes_programmed counts the routes in place. A
// peer the overlay cannot reach (a host-gw node in a vxlan network, no
// vxlan data in its lease) gets no route and is reported as an error, but
// it must not be taken off the routes the other peers have.
func TestSyncerVXLANRoutesMetric(t *testing.T) {
	r := newSyncRig(t, newFakeRoutes())
	vx := *r.store.network
	vx.Backend = netconf.Backend{Type: netconf.BackendVXLAN, VNI: 1, Port: 8472}
	own, _ := r.store.get(pfx("172.7.21.0/24"))
	r.s.state.setLease(&vx, &own, subnetfile.ForLease(vx.Network, own.Subnet, 1450, true))
	r.store.put(pfx("172.7.22.0/24"), "10.4.7.22", 2)
	r.store.put(pfx("172.7.23.0/24"), "10.4.7.23", 3)
	r.store.put(pfx("172.7.99.0/24"), "10.4.7.99", 4) // host-gw, no vxlan data
	r.s.overlay = func(*netconf.Config, *lease.Lease, []lease.Lease, bool) ([]route.Route, error) {
		return []route.Route{
			{Dst: pfx("172.7.22.0/24"), Gateway: ip("172.7.22.0"), LinkIndex: 9, OnLink: true},
			{Dst: pfx("172.7.23.0/24"), Gateway: ip("172.7.23.0"), LinkIndex: 9, OnLink: true},
		}, errors.New("peer 172.7.99.0/24 (10.4.7.99): no vxlan data in its lease and not directly reachable")
	}
	r.start(t)
	eventually(t, "two vxlan routes", func() bool { return len(r.routes()) == 2 }, nil)
	r.s.reconcile(t.Context())
	if got := r.metric(t, "weft_routes_programmed"); got != 2 {
		t.Errorf("weft_routes_programmed = %v with 2 routes in place, want 2", got)
	}
}
