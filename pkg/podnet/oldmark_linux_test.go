package podnet

import (
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weft-cni/weft/internal/nstest"
)

// TestReattachOldMarksBySubnet: two weft networks on one node, each with
// its bridge and subnet, their pods marked by a weft from before marks
// named the bridge (three fields). Both bridges were deleted; the first
// one made again gets back only the pods whose addresses lie in its
// subnet. The other network's pods wait for their own bridge, which puts
// them back in turn.
func TestReattachOldMarksBySubnet(t *testing.T) {
	node := nstest.New(t, "two weft bridges, old marks")
	err := node.Do(func(ns.NetNS) error {
		for _, v := range []struct{ name, alias string }{
			{"vmine", "weft pod 172.7.21.5 mine eth0"},
			{"vtheirs", "weft pod 10.99.3.5 theirs eth0"},
		} {
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: v.name}, PeerName: v.name + "p"}
			if err := netlink.LinkAdd(veth); err != nil {
				return err
			}
			if err := netlink.LinkSetAlias(veth, v.alias); err != nil {
				return err
			}
		}
		bridge := func(name, gw string) (netlink.Link, error) {
			if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
				return nil, err
			}
			br, err := netlink.LinkByName(name)
			if err != nil {
				return nil, err
			}
			a, err := netlink.ParseAddr(gw)
			if err != nil {
				return nil, err
			}
			return br, netlink.AddrAdd(br, a)
		}
		masterOf := func(name string) int {
			l, err := netlink.LinkByName(name)
			if err != nil {
				t.Fatal(err)
			}
			return l.Attrs().MasterIndex
		}
		weft0, err := bridge("weft0", "172.7.21.1/24")
		if err != nil {
			return err
		}
		if put, err := Reattach(weft0); err != nil || put != 1 {
			t.Errorf("Reattach(weft0) = %d, %v; want only the pod of its subnet", put, err)
		}
		if masterOf("vmine") != weft0.Attrs().Index {
			t.Error("vmine, a pod of weft0's subnet, not put back on weft0")
		}
		if m := masterOf("vtheirs"); m != 0 {
			t.Errorf("vtheirs, a pod of another network's subnet, put on ifindex %d (weft0 is %d)", m, weft0.Attrs().Index)
		}
		weft1, err := bridge("weft1", "10.99.3.1/24")
		if err != nil {
			return err
		}
		if put, err := Reattach(weft1); err != nil || put != 1 || masterOf("vtheirs") != weft1.Attrs().Index {
			t.Errorf("Reattach(weft1) = %d, %v; want vtheirs put back on weft1", put, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
