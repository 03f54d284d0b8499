package vxlan

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/route"
)

var (
	ip     = netip.MustParseAddr
	pfx    = netip.MustParsePrefix
	mac    = func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	macA   = mac("0a:00:00:00:00:21")
	macB   = mac("0a:00:00:00:00:31")
	self   = pfx("172.7.21.0/24")
	segA   = pfx("10.4.7.0/24")
	peer22 = Peer{Subnet: pfx("172.7.22.0/24"), PublicIP: ip("10.4.7.22"), VtepMAC: macA}
	peer31 = Peer{Subnet: pfx("172.7.31.0/24"), PublicIP: ip("10.4.8.31"), VtepMAC: macB}
)

func TestMAC(t *testing.T) {
	a := MAC(ip("10.4.7.21"), 1)
	if !reflect.DeepEqual(a, MAC(ip("10.4.7.21"), 1)) {
		t.Fatal("MAC is not deterministic")
	}
	if a[0]&1 != 0 || a[0]&2 == 0 {
		t.Errorf("MAC %s is not locally administered unicast", a)
	}
	for _, other := range []net.HardwareAddr{MAC(ip("10.4.7.22"), 1), MAC(ip("10.4.7.21"), 2)} {
		if reflect.DeepEqual(a, other) {
			t.Errorf("MAC %s collides with another node or VNI", a)
		}
	}
}

func TestMTU(t *testing.T) {
	for _, tt := range []struct {
		b              netconf.Backend
		underlay, want int
	}{
		{netconf.Backend{}, 1500, 1450},
		{netconf.Backend{}, 9000, 8950},
		{netconf.Backend{MTU: 1400}, 1500, 1400},
		{netconf.Backend{}, 0, 0},
	} {
		if got := MTU(tt.b, tt.underlay); got != tt.want {
			t.Errorf("MTU(%+v, %d) = %d, want %d", tt.b, tt.underlay, got, tt.want)
		}
	}
}

func TestBackendDataIsFlannels(t *testing.T) {
	data, err := BackendData(ip("10.4.7.21"), 1)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"VNI":1,"VtepMAC":"` + MAC(ip("10.4.7.21"), 1).String() + `"}`
	if string(data) != want {
		t.Errorf("BackendData = %s, want %s", data, want)
	}
	// A VNI above 16 bits is written as flannel writes it (uint16), so that
	// flannel peers, which decode a uint16, can read the lease.
	data, err = BackendData(ip("10.4.7.21"), 65536+7)
	if err != nil {
		t.Fatal(err)
	}
	var flannels struct {
		VNI     uint16
		VtepMAC string
	}
	if err := json.Unmarshal(data, &flannels); err != nil || flannels.VNI != 7 {
		t.Errorf("flannel's decoding of %s: %+v, %v; want VNI 7", data, flannels, err)
	}
}

func vxlanLease(subnet, pub string, m net.HardwareAddr) lease.Lease {
	data, _ := json.Marshal(lease.VXLANData{VNI: 1, VtepMAC: m})
	return lease.Lease{Subnet: pfx(subnet), Attrs: lease.Attrs{PublicIP: ip(pub), BackendType: "vxlan", BackendData: data}}
}

func TestPeers(t *testing.T) {
	leases := []lease.Lease{
		vxlanLease("172.7.31.0/24", "10.4.8.31", macB),
		vxlanLease("172.7.21.0/24", "10.4.7.21", macA),                                                        // self
		vxlanLease("172.7.99.0/24", "10.4.7.21", macA),                                                        // another lease of self's IP
		{Subnet: pfx("172.7.23.0/24"), Attrs: lease.Attrs{PublicIP: ip("10.4.7.23"), BackendType: "host-gw"}}, // no vxlan data
		vxlanLease("172.7.22.0/24", "10.4.7.22", macA),
	}
	got := Peers(leases, self, ip("10.4.7.21"))
	want := []Peer{peer22, {Subnet: pfx("172.7.23.0/24"), PublicIP: ip("10.4.7.23")}, peer31}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Peers = %+v\nwant %+v", got, want)
	}
}

func TestDesired(t *testing.T) {
	hostgw23 := Peer{Subnet: pfx("172.7.23.0/24"), PublicIP: ip("10.4.7.23")}
	viaVXLAN := func(p Peer) route.Route {
		return route.Route{Dst: p.Subnet, Gateway: p.Subnet.Addr(), LinkIndex: 7, OnLink: true}
	}
	tests := []struct {
		name  string
		peers []Peer
		o     Options
		want  State
	}{
		{"vxlan for all", []Peer{peer22, peer31}, Options{Self: self, LinkIndex: 7, Connected: []netip.Prefix{segA}},
			State{
				Routes: []route.Route{viaVXLAN(peer22), viaVXLAN(peer31)},
				Neighs: []Neigh{{ip("172.7.22.0"), macA}, {ip("172.7.31.0"), macB}},
				FDB:    []FDB{{macA, ip("10.4.7.22")}, {macB, ip("10.4.8.31")}},
			}},
		{"direct routing: same segment direct, other vxlan", []Peer{peer22, peer31, hostgw23},
			Options{Self: self, LinkIndex: 7, DirectRouting: true, Connected: []netip.Prefix{segA}},
			State{
				Routes: []route.Route{{Dst: peer22.Subnet, Gateway: ip("10.4.7.22")}, viaVXLAN(peer31), {Dst: hostgw23.Subnet, Gateway: ip("10.4.7.23")}},
				Neighs: []Neigh{{ip("172.7.31.0"), macB}},
				FDB:    []FDB{{macB, ip("10.4.8.31")}},
			}},
		{"no vxlan data and not direct", []Peer{hostgw23}, Options{Self: self, LinkIndex: 7},
			State{Unreachable: []Peer{hostgw23}}},
		{"self, duplicates and invalid skipped",
			[]Peer{{Subnet: self, PublicIP: ip("10.4.7.21"), VtepMAC: macA}, peer31, {Subnet: peer31.Subnet, PublicIP: ip("10.4.8.32"), VtepMAC: macA}, {PublicIP: ip("10.4.7.9")}},
			Options{Self: self, LinkIndex: 7},
			State{Routes: []route.Route{viaVXLAN(peer31)}, Neighs: []Neigh{{ip("172.7.31.0"), macB}}, FDB: []FDB{{macB, ip("10.4.8.31")}}}},
		{"a /32 address is no segment", []Peer{peer22}, Options{Self: self, LinkIndex: 7, DirectRouting: true, Connected: []netip.Prefix{pfx("10.4.7.22/32")}},
			State{Routes: []route.Route{viaVXLAN(peer22)}, Neighs: []Neigh{{ip("172.7.22.0"), macA}}, FDB: []FDB{{macA, ip("10.4.7.22")}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Desired(tt.peers, tt.o); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Desired =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestDiffNeighs(t *testing.T) {
	n22, n31 := Neigh{ip("172.7.22.0"), macA}, Neigh{ip("172.7.31.0"), macB}
	moved := Neigh{ip("172.7.31.0"), macA}
	up, rm := DiffNeighs([]Neigh{n31, n22}, []Neigh{moved, {ip("172.7.40.0"), macB}})
	if want := []Neigh{n22, n31}; !reflect.DeepEqual(up, want) {
		t.Errorf("upsert %v, want %v", up, want)
	}
	if want := []Neigh{{ip("172.7.40.0"), macB}}; !reflect.DeepEqual(rm, want) {
		t.Errorf("remove %v, want %v", rm, want)
	}
	if up, rm := DiffNeighs([]Neigh{n22}, []Neigh{n22}); up != nil || rm != nil {
		t.Errorf("in sync: upsert %v remove %v", up, rm)
	}
}

func TestDiffFDB(t *testing.T) {
	a, b := FDB{macA, ip("10.4.7.22")}, FDB{macB, ip("10.4.8.31")}
	aMoved := FDB{macA, ip("10.4.7.32")}
	up, rm := DiffFDB([]FDB{aMoved, b}, []FDB{a, b, {mac("0a:00:00:00:00:99"), ip("10.4.7.99")}})
	if want := []FDB{aMoved}; !reflect.DeepEqual(up, want) {
		t.Errorf("upsert %v, want %v", up, want)
	}
	if want := []FDB{a, {mac("0a:00:00:00:00:99"), ip("10.4.7.99")}}; !reflect.DeepEqual(rm, want) {
		t.Errorf("remove %v, want %v", rm, want)
	}
}

// fakeProgrammer is a device's entries in memory.
type fakeProgrammer struct {
	neighs []Neigh
	fdb    []FDB
	fail   error // returned by every Set
}

func (f *fakeProgrammer) Neighs() ([]Neigh, error) { return append([]Neigh(nil), f.neighs...), nil }
func (f *fakeProgrammer) FDB() ([]FDB, error)      { return append([]FDB(nil), f.fdb...), nil }
func (f *fakeProgrammer) SetNeigh(n Neigh) error {
	if f.fail != nil {
		return f.fail
	}
	f.DelNeigh(n)
	f.neighs = append(f.neighs, n)
	return nil
}
func (f *fakeProgrammer) DelNeigh(n Neigh) error {
	for i, x := range f.neighs {
		if x.IP == n.IP {
			f.neighs = append(f.neighs[:i], f.neighs[i+1:]...)
			break
		}
	}
	return nil
}
func (f *fakeProgrammer) SetFDB(e FDB) error {
	if f.fail != nil {
		return f.fail
	}
	for i, x := range f.fdb {
		if x.MAC.String() == e.MAC.String() {
			f.fdb[i] = e
			return nil
		}
	}
	f.fdb = append(f.fdb, e)
	return nil
}
func (f *fakeProgrammer) DelFDB(e FDB) error {
	for i, x := range f.fdb {
		if x.MAC.String() == e.MAC.String() && x.Dst == e.Dst {
			f.fdb = append(f.fdb[:i], f.fdb[i+1:]...)
			break
		}
	}
	return nil
}

var _ Programmer = (*fakeProgrammer)(nil)

func TestReconcile(t *testing.T) {
	stale := Neigh{ip("172.7.40.0"), macB}
	p := &fakeProgrammer{neighs: []Neigh{stale}, fdb: []FDB{{macA, ip("10.4.7.99")}}}
	desired := Desired([]Peer{peer22, peer31}, Options{Self: self, LinkIndex: 7})

	if _, err := Reconcile(p, desired, false); err != nil {
		t.Fatal(err)
	}
	if len(p.neighs) != 3 {
		t.Errorf("without prune the stale neighbour must stay: %v", p.neighs)
	}
	res, err := Reconcile(p, desired, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 1 {
		t.Errorf("result %+v, want one removal", res)
	}
	if up, rm := DiffNeighs(desired.Neighs, p.neighs); up != nil || rm != nil {
		t.Errorf("neighbours not converged: %v / %v", up, rm)
	}
	if up, rm := DiffFDB(desired.FDB, p.fdb); up != nil || rm != nil {
		t.Errorf("FDB not converged: %v / %v", up, rm)
	}
	if res, err := Reconcile(p, desired, true); err != nil || res != (Result{}) {
		t.Errorf("in sync: %+v %v", res, err)
	}

	boom := errors.New("boom")
	q := &fakeProgrammer{fail: boom}
	_, err = Reconcile(q, desired, true)
	if !errors.Is(err, boom) {
		t.Errorf("error %v does not wrap the programmer's", err)
	}
}
