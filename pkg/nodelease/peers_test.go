package nodelease

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/weft-cni/weft/pkg/etcdclient"
	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/route"
)

func leaseOf(subnet, publicIP string) lease.Lease {
	return lease.Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: lease.Attrs{PublicIP: netip.MustParseAddr(publicIP), BackendType: "host-gw"}}
}

func peerOf(subnet, publicIP string) route.Peer {
	return route.Peer{Subnet: netip.MustParsePrefix(subnet), PublicIP: netip.MustParseAddr(publicIP)}
}

func TestPeersLeavesOutEveryLeaseOfSelf(t *testing.T) {
	self := netip.MustParsePrefix("172.7.21.0/24")
	tests := []struct {
		name   string
		leases []lease.Lease
		want   []route.Peer
	}{
		{"self and a peer",
			[]lease.Lease{leaseOf("172.7.21.0/24", "10.4.7.21"), leaseOf("172.7.22.0/24", "10.4.7.22")},
			[]route.Peer{peerOf("172.7.22.0/24", "10.4.7.22")}},
		{"an older lease of this node's PublicIP",
			[]lease.Lease{leaseOf("172.7.20.0/23", "10.4.7.21"), leaseOf("172.7.21.0/24", "10.4.7.21"), leaseOf("172.7.22.0/24", "10.4.7.22")},
			[]route.Peer{peerOf("172.7.22.0/24", "10.4.7.22")}},
		{"self not listed: only self is left out",
			[]lease.Lease{leaseOf("172.7.22.0/24", "10.4.7.22"), leaseOf("172.7.23.0/24", "10.4.7.23")},
			[]route.Peer{peerOf("172.7.22.0/24", "10.4.7.22"), peerOf("172.7.23.0/24", "10.4.7.23")}},
		{"none", nil, []route.Peer{}},
	}
	for _, tt := range tests {
		if got := Peers(tt.leases, self); !slices.Equal(got, tt.want) {
			t.Errorf("%s: Peers = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestSyncPeersLeaveOutOwnSecondLease: with two leases of the node's public
// IP in etcd, the plugin's first use must not route the other one via the
// node itself.
func TestSyncPeersLeaveOutOwnSecondLease(t *testing.T) {
	eps := startEtcd(t)
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: eps}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	for _, kv := range [][2]string{
		{"172.7.21.0-24", `{"PublicIP":"10.4.7.21","PublicIPv6":null,"BackendType":"host-gw"}`},
		{"172.7.121.0-24", `{"PublicIP":"10.4.7.21","PublicIPv6":null,"BackendType":"host-gw"}`},
		{"172.7.22.0-24", `{"PublicIP":"10.4.7.22","PublicIPv6":null,"BackendType":"host-gw"}`},
	} {
		if _, err := cli.Put(ctx, lease.DefaultPrefix+"/subnets/"+kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	c := &Config{EtcdEndpoints: eps, SubnetFile: filepath.Join(t.TempDir(), "subnet.env")}
	st, err := Sync(ctx, c, Identity{PublicIP: netip.MustParseAddr("10.4.7.21"), MTU: 1500}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if st.Self.Subnet != netip.MustParsePrefix("172.7.21.0/24") {
		t.Fatalf("Self = %s, want the oldest lease 172.7.21.0/24", st.Self.Subnet)
	}
	if want := []route.Peer{peerOf("172.7.22.0/24", "10.4.7.22")}; !slices.Equal(st.Peers, want) {
		t.Errorf("Peers = %v, want %v (no route via the node's own IP)", st.Peers, want)
	}
}
