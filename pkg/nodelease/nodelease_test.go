package nodelease

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/weft-cni/weft/internal/etcdembed"
	"github.com/weft-cni/weft/internal/testcerts"
	"github.com/weft-cni/weft/pkg/etcdclient"
	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func startEtcd(t *testing.T) []string {
	t.Helper()
	srv, err := etcdembed.Start("", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: srv.Endpoints()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if err := lease.NewStore(cli, "").PutNetworkConfig(context.Background(), []byte(`{"Network":"172.7.0.0/16"}`)); err != nil {
		t.Fatal(err)
	}
	return srv.Endpoints()
}

func TestSyncAcquiresAndKeeps(t *testing.T) {
	eps := startEtcd(t)
	dir := t.TempDir()
	c1 := &Config{EtcdEndpoints: eps, SubnetFile: filepath.Join(dir, "21.env")}
	c2 := &Config{EtcdEndpoints: eps, SubnetFile: filepath.Join(dir, "22.env")}
	id1 := Identity{PublicIP: netip.MustParseAddr("10.4.7.21"), MTU: 1500}
	id2 := Identity{PublicIP: netip.MustParseAddr("10.4.7.22"), MTU: 1400}
	ctx := context.Background()
	st1, err := Sync(ctx, c1, id1, quiet)
	if err != nil {
		t.Fatal(err)
	}
	st2, err := Sync(ctx, c2, id2, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if st1.File.Lease() == st2.File.Lease() {
		t.Fatalf("two nodes got %s", st1.File.Lease())
	}
	if len(st2.Peers) != 1 || st2.Peers[0].Subnet != st1.File.Lease() || st2.Peers[0].PublicIP != id1.PublicIP {
		t.Fatalf("node22's peers %v, want node21's lease", st2.Peers)
	}
	if st2.File.MTU != 1400 || !st2.File.IPMasq {
		t.Fatalf("subnet file %+v, want the underlay MTU and masquerade on", st2.File)
	}
	again, err := Sync(ctx, c1, id1, quiet)
	if err != nil || again.File.Lease() != st1.File.Lease() {
		t.Fatalf("second sync: %v, %v; want the same subnet %s", again, err, st1.File.Lease())
	}
	if !again.Self.Reservation() {
		t.Error("a lease the plugin acquires must be a permanent reservation")
	}
	if got, err := Current(c1); err != nil || got.Lease() != st1.File.Lease() {
		t.Fatalf("subnet file: %v, %v", got, err)
	}
}

func TestSyncEtcdUnreachable(t *testing.T) {
	dir := t.TempDir()
	c := &Config{EtcdEndpoints: []string{"http://127.0.0.1:1"}, SubnetFile: filepath.Join(dir, "subnet.env")}
	id := Identity{PublicIP: netip.MustParseAddr("10.4.7.21"), MTU: 1500}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := Sync(ctx, c, id, quiet); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("no file, no etcd: err %v, want ErrUnavailable", err)
	}
	if err := os.WriteFile(c.SubnetFile, []byte("FLANNEL_NETWORK=172.7.0.0/16\nFLANNEL_SUBNET=172.7.21.1/24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	st, err := Sync(ctx2, c, id, quiet)
	if err != nil || st.Degraded == nil || st.File.Lease().String() != "172.7.21.0/24" {
		t.Fatalf("file present, no etcd: %+v, %v; want the file's lease, degraded", st, err)
	}
}

// TestSyncEtcdUnreachableTLS: with TLS configured, etcd being down is still
// an outage (the subnet file serves, degraded), not a TLS config error.
func TestSyncEtcdUnreachableTLS(t *testing.T) {
	dir := t.TempDir()
	f, err := testcerts.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := &Config{EtcdEndpoints: []string{"https://127.0.0.1:1"}, EtcdCAFile: f.CA, EtcdCertFile: f.ClientCert,
		EtcdKeyFile: f.ClientKey, SubnetFile: filepath.Join(dir, "subnet.env")}
	if err := os.WriteFile(c.SubnetFile, []byte("FLANNEL_NETWORK=172.7.0.0/16\nFLANNEL_SUBNET=172.7.21.1/24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := Identity{PublicIP: netip.MustParseAddr("10.4.7.21"), MTU: 1500}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := Sync(ctx, c, id, quiet)
	if err != nil || st.Degraded == nil || !errors.Is(st.Degraded, ErrUnavailable) || st.File.Lease().String() != "172.7.21.0/24" {
		t.Fatalf("TLS, file present, no etcd: %+v, %v; want the file's lease, degraded as unavailable", st, err)
	}
}

func TestInherit(t *testing.T) {
	masq := false
	top := Config{EtcdEndpoints: []string{"http://a"}, EtcdPrefix: "/p", SubnetFile: "/run/x.env", PublicIP: "10.0.0.1", IPMasq: &masq, MTU: 1400, PublicIPCIDR: "10.0.0.0/8"}
	c := Config{EtcdPrefix: "/own"}
	c.Inherit(top)
	if c.EtcdEndpoints[0] != "http://a" || c.EtcdPrefix != "/own" || c.SubnetFile != "/run/x.env" || c.Masquerade(nil) || c.MTU != 1400 || c.PublicIP != "10.0.0.1" || c.PublicIPCIDR != "10.0.0.0/8" {
		t.Fatalf("inherit: %+v", c)
	}
}

// TestSyncPublicIPCIDR: a peer lease whose PublicIP is outside publicIPCIDR
// is neither a route peer nor a vxlan lease; the node's own lease and
// peers inside it are kept.
func TestSyncPublicIPCIDR(t *testing.T) {
	eps := startEtcd(t)
	dir := t.TempDir()
	ctx := context.Background()
	join := func(name, ip, cidr string) *State {
		t.Helper()
		c := &Config{EtcdEndpoints: eps, SubnetFile: filepath.Join(dir, name+".env"), PublicIPCIDR: cidr}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		st, err := Sync(ctx, c, Identity{PublicIP: netip.MustParseAddr(ip), MTU: 1500}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	forged := join("forged", "192.0.2.9", "")
	inside := join("inside", "10.4.7.22", "")
	st := join("self", "10.4.7.21", "10.4.7.0/24")
	if len(st.Peers) != 1 || st.Peers[0].Subnet != inside.File.Lease() {
		t.Errorf("peers = %v, want only %s (not the forged %s)", st.Peers, inside.File.Lease(), forged.File.Lease())
	}
	for _, l := range st.Leases {
		if l.Subnet == forged.File.Lease() {
			t.Errorf("the forged lease %s is among the leases the overlay programs", l.Subnet)
		}
	}
	if len(st.Leases) != 2 {
		t.Errorf("leases = %v, want self and the peer inside the node network", st.Leases)
	}
	if err := (&Config{PublicIPCIDR: "10.4.7.0"}).Validate(); !errors.Is(err, ErrConfig) {
		t.Errorf("publicIPCIDR without a length: %v, want ErrConfig", err)
	}
	if err := (&Config{PublicIPCIDR: "fd00::/64"}).Validate(); !errors.Is(err, ErrConfig) {
		t.Errorf("IPv6 publicIPCIDR: %v, want ErrConfig", err)
	}
}

// The masquerade setting: the config's when set, else a weft-written subnet
// file's, else on. A file flanneld left (no WEFT_IPMASQ) is not followed.
func TestMasquerade(t *testing.T) {
	on, off := true, false
	network, lease := netip.MustParsePrefix("172.7.0.0/16"), netip.MustParsePrefix("172.7.21.0/24")
	weftOff := subnetfile.ForLease(network, lease, 1500, false)
	flannelOff := &subnetfile.File{Network: network, Subnet: weftOff.Subnet, IPMasq: false}
	for _, tc := range []struct {
		name string
		conf *bool
		file *subnetfile.File
		want bool
	}{
		{"no file, unset", nil, nil, true},
		{"no file, off", &off, nil, false},
		{"weft file off, unset", nil, weftOff, false},
		{"weft file off, config on", &on, weftOff, true},
		{"flanneld's file off, unset", nil, flannelOff, true},
	} {
		c := &Config{IPMasq: tc.conf}
		if got := c.Masquerade(tc.file); got != tc.want {
			t.Errorf("%s: Masquerade = %t, want %t", tc.name, got, tc.want)
		}
	}
}

// A plugin sync with ipMasq unset keeps the setting of the subnet file the
// daemon wrote (--ip-masq=false), rather than writing its default over it.
func TestSyncKeepsTheDaemonsMasquerade(t *testing.T) {
	eps := startEtcd(t)
	c := &Config{EtcdEndpoints: eps, SubnetFile: filepath.Join(t.TempDir(), "subnet.env")}
	id := Identity{PublicIP: netip.MustParseAddr("10.4.7.21"), MTU: 1500}
	st, err := Sync(context.Background(), c, id, quiet)
	if err != nil {
		t.Fatal(err)
	}
	daemons := subnetfile.ForLease(st.File.Network, st.File.Lease(), st.File.MTU, false)
	if err := subnetfile.Write(c.SubnetFile, daemons); err != nil {
		t.Fatal(err)
	}
	if st, err = Sync(context.Background(), c, id, quiet); err != nil {
		t.Fatal(err)
	}
	got, err := Current(c)
	if err != nil || got.IPMasq || !got.Weft || st.File.IPMasq {
		t.Fatalf("subnet file after the plugin's sync: %+v, %v; want the daemon's WEFT_IPMASQ=false kept", got, err)
	}
}

// An explicit ipMasq is the plugin's own choice, not the node's: taken out
// of the conflist again, it is not remembered.
func TestSyncDoesNotRememberExplicitMasquerade(t *testing.T) {
	eps := startEtcd(t)
	off := false
	c := &Config{EtcdEndpoints: eps, SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), IPMasq: &off}
	id := Identity{PublicIP: netip.MustParseAddr("10.4.7.21"), MTU: 1500}
	if _, err := Sync(context.Background(), c, id, quiet); err != nil {
		t.Fatal(err)
	}
	file, err := Current(c)
	if err != nil || file.IPMasq || file.Weft {
		t.Fatalf("subnet file after a sync with ipMasq false: %+v, %v; want FLANNEL_IPMASQ=false and no WEFT_IPMASQ", file, err)
	}
	c.IPMasq = nil
	if !c.Masquerade(file) {
		t.Error("ipMasq taken out of the config, yet masquerading stays off")
	}
}

// A plugin with an explicit ipMasq of its own leaves the daemon's setting
// in the subnet file as it is (its own rules follow its ipMasq, warned).
func TestSyncKeepsTheDaemonsMasqueradeBesideExplicit(t *testing.T) {
	eps := startEtcd(t)
	on := true
	c := &Config{EtcdEndpoints: eps, SubnetFile: filepath.Join(t.TempDir(), "subnet.env")}
	id := Identity{PublicIP: netip.MustParseAddr("10.4.7.21"), MTU: 1500}
	st, err := Sync(context.Background(), c, id, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err := subnetfile.Write(c.SubnetFile, subnetfile.ForLease(st.File.Network, st.File.Lease(), st.File.MTU, false)); err != nil {
		t.Fatal(err)
	}
	c.IPMasq = &on
	if _, err := Sync(context.Background(), c, id, quiet); err != nil {
		t.Fatal(err)
	}
	got, err := Current(c)
	if err != nil || !got.Weft || got.IPMasq {
		t.Fatalf("subnet file after a sync with ipMasq true: %+v, %v; want the daemon's WEFT_IPMASQ=false kept", got, err)
	}
	if !c.Masquerade(got) {
		t.Error("the plugin's explicit ipMasq true is not what it follows")
	}
}
