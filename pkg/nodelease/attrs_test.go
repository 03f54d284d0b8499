package nodelease

import (
	"net/netip"
	"testing"

	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/vxlan"
)

func TestLeaseAttrsAndPodMTU(t *testing.T) {
	pub := netip.MustParseAddr("10.4.7.21")
	id := Identity{PublicIP: pub, MTU: 1500}
	for _, tt := range []struct {
		config, lease string
		mtu           int
	}{
		{`{"Network":"172.7.0.0/16"}`, `{"PublicIP":"10.4.7.21","PublicIPv6":null,"BackendType":"host-gw"}`, 1500},
		{`{"Network":"172.7.0.0/16","Backend":{"Type":"vxlan"}}`,
			`{"PublicIP":"10.4.7.21","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"` + vxlan.MAC(pub, 1).String() + `"}}`, 1450},
		{`{"Network":"172.7.0.0/16","Backend":{"Type":"vxlan","VNI":42,"MTU":1400,"DirectRouting":true}}`,
			`{"PublicIP":"10.4.7.21","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":42,"VtepMAC":"` + vxlan.MAC(pub, 42).String() + `"}}`, 1400},
	} {
		network, err := netconf.Parse([]byte(tt.config))
		if err != nil {
			t.Fatal(err)
		}
		attrs, err := LeaseAttrs(network, pub)
		if err != nil {
			t.Fatal(err)
		}
		got, err := attrs.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.lease {
			t.Errorf("%s: lease %s\nwant %s", tt.config, got, tt.lease)
		}
		if got := PodMTU(network, id); got != tt.mtu {
			t.Errorf("%s: pod MTU %d, want %d", tt.config, got, tt.mtu)
		}
	}
}
