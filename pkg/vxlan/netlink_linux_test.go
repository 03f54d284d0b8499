package vxlan

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weft-cni/weft/internal/nstest"
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
