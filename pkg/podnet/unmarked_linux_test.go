package podnet

import (
	"errors"
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weft-cni/weft/internal/nstest"
	"github.com/weft-cni/weft/pkg/ipam"
)

// TestLiveReportsUnmarkedPorts: a port of the bridge that carries no mark
// (a pod added by a weft from before the marks, or whose container ID was
// too long for one) is a pod whose attachment Live cannot name. Live still
// returns the pods it can name, with an error wrapping ipam.ErrUnattributed
// that names the port, so that nothing takes that pod for gone; an
// unmarked veth off the bridge, or on another bridge, is not reported.
func TestLiveReportsUnmarkedPorts(t *testing.T) {
	node := nstest.New(t, "a bridge with an unmarked port")
	err := node.Do(func(ns.NetNS) error {
		for _, name := range []string{"weft0", "other0"} {
			if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
				return err
			}
		}
		web := ipam.Attachment{ContainerID: "web", IfName: "eth0"}
		for _, v := range []struct{ name, alias, master string }{
			{"vweb", podMark{owner: web, addr: netip.MustParseAddr("172.7.21.2"), bridge: "weft0", hairpin: true}.render(), "weft0"},
			{"vlegacy", "", "weft0"},   // a pod from before the marks
			{"vloose", "", ""},         // not a port of any bridge
			{"vforeign", "", "other0"}, // another bridge's port
		} {
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: v.name}, PeerName: v.name + "p"}
			if err := netlink.LinkAdd(veth); err != nil {
				return err
			}
			l, err := netlink.LinkByName(v.name)
			if err != nil {
				return err
			}
			if v.alias != "" {
				if err := netlink.LinkSetAlias(l, v.alias); err != nil {
					return err
				}
			}
			if v.master != "" {
				br, err := netlink.LinkByName(v.master)
				if err != nil {
					return err
				}
				if err := netlink.LinkSetMaster(l, br); err != nil {
					return err
				}
			}
		}
		live, err := Live("weft0")
		if !errors.Is(err, ipam.ErrUnattributed) || !strings.Contains(err.Error(), "vlegacy") {
			t.Errorf("Live with an unmarked port: error %v, want one wrapping ipam.ErrUnattributed naming vlegacy", err)
		}
		if err != nil && (strings.Contains(err.Error(), "vloose") || strings.Contains(err.Error(), "vforeign")) {
			t.Errorf("Live reported a veth that is not a port of weft0: %v", err)
		}
		if want := map[ipam.Attachment]netip.Addr{web: netip.MustParseAddr("172.7.21.2")}; !maps.Equal(live, want) {
			t.Errorf("Live = %v, want the marked pod %v", live, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
