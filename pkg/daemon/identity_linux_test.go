package daemon

import (
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weft-cni/weft/internal/nstest"
)

// TestResolveIdentityIfaceAddress: --iface given as an address names the
// interface that holds it. When none does (a typo, or the address removed),
// the candidate fails, as flanneld's does; it never resolves to the default
// route's interface advertising an address the node does not have.
func TestResolveIdentityIfaceAddress(t *testing.T) {
	node := nstest.New(t, "a node with eth1 holding 10.9.9.9 and a default route")
	err := node.Do(func(ns.NetNS) error {
		eth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth1"}, PeerName: "eth1p"}
		if err := netlink.LinkAdd(eth); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(eth); err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("10.9.9.9/24")
		if err := netlink.AddrAdd(eth, addr); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: net.ParseIP("10.9.9.1")}); err != nil {
			return err
		}
		id, err := ResolveIdentity(&Config{Ifaces: []string{"10.9.9.9"}})
		if err != nil || id.Iface != "eth1" || id.PublicIP.String() != "10.9.9.9" {
			t.Errorf("--iface 10.9.9.9 = %+v, %v; want eth1 at 10.9.9.9", id, err)
		}
		id, err = ResolveIdentity(&Config{Ifaces: []string{"10.9.9.10"}})
		if err == nil || !strings.Contains(err.Error(), "no interface holds it") {
			t.Errorf("--iface 10.9.9.10, held by no interface = %+v, %v; want an error", id, err)
		}
		id, err = ResolveIdentity(&Config{Ifaces: []string{"10.9.9.10", "eth1"}})
		if err != nil || id.Iface != "eth1" || id.PublicIP.String() != "10.9.9.9" {
			t.Errorf("--iface 10.9.9.10,eth1 = %+v, %v; want the second candidate", id, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
