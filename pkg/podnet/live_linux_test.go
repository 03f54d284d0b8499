package podnet

import (
	"maps"
	"net/netip"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weft-cni/weft/internal/nstest"
	"github.com/weft-cni/weft/pkg/ipam"
)

// TestLive: only marked veths on the bridge count; no bridge means no pods.
func TestLive(t *testing.T) {
	node := nstest.New(t, "veths on a bridge")
	err := node.Do(func(ns.NetNS) error {
		if live, err := Live("weft0"); err != nil || len(live) != 0 {
			t.Errorf("Live without a bridge = %v, %v; want none", live, err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "weft0"}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		web := ipam.Attachment{ContainerID: "web", IfName: "eth0"}
		for _, v := range []struct {
			name, alias string
			onBridge    bool
		}{
			{"vweb", mark(web, netip.MustParseAddr("172.7.21.2")), true},
			{"vplain", "", true}, // not ours
			{"voff", mark(ipam.Attachment{ContainerID: "off", IfName: "eth0"}, netip.MustParseAddr("172.7.21.3")), false}, // not on the bridge
		} {
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: v.name}, PeerName: v.name + "p"}
			if err := netlink.LinkAdd(veth); err != nil {
				return err
			}
			if v.onBridge {
				if err := netlink.LinkSetMaster(veth, br); err != nil {
					return err
				}
			}
			if v.alias != "" {
				if err := netlink.LinkSetAlias(veth, v.alias); err != nil {
					return err
				}
			}
		}
		live, err := Live("weft0")
		want := map[ipam.Attachment]netip.Addr{web: netip.MustParseAddr("172.7.21.2")}
		if err != nil || !maps.Equal(live, want) {
			t.Errorf("Live = %v, %v; want %v", live, err, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
