package vxlan

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weft-cni/weft/internal/nstest"
	"github.com/weft-cni/weft/pkg/netconf"
)

// flanneld's flannel.1 holds VNI 1 on port 8472 and the kernel allows one
// such device per namespace: creating weft.1 must say who holds it.
func TestDeviceNamesTheVNIsHolder(t *testing.T) {
	netns := nstest.New(t, "creates vxlan devices")
	var beside, alone error
	err := netns.Do(func(ns.NetNS) error {
		flannel := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1"}, VxlanId: 1, Port: 8472}
		if err := netlink.LinkAdd(flannel); err != nil {
			return err
		}
		d := Device{VNI: 1, Port: 8472, MAC: MAC(netip.MustParseAddr("10.4.7.21"), 1)}
		_, beside = d.Ensure(netip.MustParseAddr("172.7.21.0"))
		if err := netlink.LinkDel(flannel); err != nil {
			return err
		}
		_, alone = d.Ensure(netip.MustParseAddr("172.7.21.0"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if beside == nil || !strings.Contains(beside.Error(), "taken by flannel.1") {
		t.Errorf("Ensure beside flannel.1: err %v, want one naming flannel.1", beside)
	}
	if alone != nil {
		t.Errorf("Ensure once flannel.1 is gone: %v", alone)
	}
}

// The VTEP's local address must be one the node holds: the kernel cannot
// send from any other (the device counts a TX error per packet and peers
// get nothing). With --public-ip an address NAT maps to the node, the
// lease advertises it but the device sends from the underlay's own address,
// as flanneld's does (its IfaceAddr, not ExtAddr); when the underlay holds
// the public IP, that one is used even if it is not the first.
func TestApplyVTEPSendsFromAnAddressTheNodeHolds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		addrs    []string
		publicIP string
		want     string
	}{
		{"public IP behind NAT", []string{"10.4.7.21/24"}, "203.0.113.21", "10.4.7.21"},
		{"public IP on the underlay", []string{"10.4.7.5/24", "10.4.7.21/24"}, "10.4.7.21", "10.4.7.21"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			netns := nstest.New(t, "creates a vxlan device")
			var local string
			err := netns.Do(func(ns.NetNS) error {
				nstest.Uplink(t, tc.addrs...)
				n := Node{Backend: netconf.Backend{Type: netconf.BackendVXLAN, VNI: 1, Port: 8472},
					Subnet: netip.MustParsePrefix("172.7.21.0/24"), PublicIP: netip.MustParseAddr(tc.publicIP), Underlay: "up0"}
				if _, err := Apply(n, nil, true); err != nil {
					return err
				}
				link, err := netlink.LinkByName(DeviceName(1))
				if err != nil {
					return err
				}
				local = link.(*netlink.Vxlan).SrcAddr.String()
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if local != tc.want {
				t.Errorf("weft.1 sends from %s, want %s (an address the node holds)", local, tc.want)
			}
		})
	}
}

// The device follows the network's GBP: flannel nodes with "GBP": true set
// the G flag on every packet that carries a firewall mark (kube-proxy's),
// which a device without GBP drops as malformed.
// Turning GBP on or off replaces the device, which the kernel cannot change
// in place.
func TestApplyFollowsGBP(t *testing.T) {
	netns := nstest.New(t, "creates a vxlan device")
	var got []bool
	err := netns.Do(func(ns.NetNS) error {
		nstest.Uplink(t, "10.4.7.21/24")
		for _, gbp := range []bool{true, true, false} {
			n := Node{Backend: netconf.Backend{Type: netconf.BackendVXLAN, VNI: 1, Port: 8472, GBP: gbp},
				Subnet: netip.MustParsePrefix("172.7.21.0/24"), PublicIP: netip.MustParseAddr("10.4.7.21"), Underlay: "up0"}
			if _, err := Apply(n, nil, true); err != nil {
				return err
			}
			link, err := netlink.LinkByName(DeviceName(1))
			if err != nil {
				return err
			}
			got = append(got, link.(*netlink.Vxlan).GBP)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, true, false}; !slices.Equal(got, want) {
		t.Errorf("weft.1's GBP after Apply with GBP %v: %v", want, got)
	}
}
