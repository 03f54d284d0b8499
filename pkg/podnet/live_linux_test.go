package podnet

import (
	"maps"
	"net"
	"net/netip"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weft-cni/weft/internal/nstest"
	"github.com/weft-cni/weft/pkg/ipam"
)

// TestLiveAndReattach: every marked veth counts as a live pod, on the
// bridge or off it (its bridge deleted), whichever bridge its mark names;
// Reattach puts the marked ones of this bridge that have no bridge back on
// it, each with the hairpin setting its mark records, and leaves alone
// veths that are not weft's or belong to another bridge. Marks from before
// the bridge was recorded count for any.
func TestLiveAndReattach(t *testing.T) {
	node := nstest.New(t, "veths on a bridge")
	err := node.Do(func(ns.NetNS) error {
		if live, err := Live("weft0"); err != nil || len(live) != 0 {
			t.Errorf("Live with no veths = %v, %v; want none", live, err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "weft0"}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		// The gateway, as EnsureBridge sets it before Reattach runs: an
		// old mark goes back only onto the bridge of its subnet.
		if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(172, 7, 21, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		at := func(id string) ipam.Attachment { return ipam.Attachment{ContainerID: id, IfName: "eth0"} }
		addr := func(last byte) netip.Addr { return netip.AddrFrom4([4]byte{172, 7, 21, last}) }
		pod := func(id string, last byte, bridge string, hairpin bool) string {
			return podMark{owner: at(id), addr: addr(last), bridge: bridge, hairpin: hairpin}.render()
		}
		for _, v := range []struct {
			name, alias string
			onBridge    bool
		}{
			{"vweb", pod("web", 2, "weft0", true), true},
			{"vplain", "", false},                                                                                 // not ours
			{"voff", pod("off", 3, "weft0", true), false},                                                         // its bridge deleted
			{"vnohp", pod("nohp", 4, "weft0", false), false},                                                      // same, ADDed with hairpinMode false
			{"vold", "weft pod 172.7.21.5 old eth0", false},                                                       // marked by an older weft
			{"vother", pod("other", 6, "weft1", true), false},                                                     // another weft network's pod
			{"vpend", podMark{owner: at("pend"), addr: netip.IPv4Unspecified(), bridge: "weft0"}.render(), false}, // an ADD under way
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
		want := map[ipam.Attachment]netip.Addr{at("web"): addr(2), at("off"): addr(3), at("nohp"): addr(4),
			at("old"): addr(5), at("pend"): netip.IPv4Unspecified(), at("other"): addr(6)}
		if err != nil || !maps.Equal(live, want) {
			t.Errorf("Live = %v, %v; want %v", live, err, want)
		}
		bridge, err := netlink.LinkByName("weft0")
		if err != nil {
			return err
		}
		if put, err := Reattach(bridge); err != nil || put != 3 {
			t.Errorf("Reattach = %d, %v; want the three marked veths off the bridge with an address", put, err)
		}
		for name, want := range map[string]bool{"vweb": true, "voff": true, "vnohp": true, "vold": true,
			"vplain": false, "vother": false, "vpend": false} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if on := l.Attrs().MasterIndex == bridge.Attrs().Index; on != want {
				t.Errorf("%s on the bridge: %t, want %t", name, on, want)
			}
		}
		for name, want := range map[string]bool{"voff": true, "vnohp": false, "vold": true} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if pi, err := netlink.LinkGetProtinfo(l); err != nil || pi.Hairpin != want {
				t.Errorf("%s put back with hairpin %t (%v), want %t", name, pi.Hairpin, err, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPlugMarksBeforeWire: a pair plugged in but not wired yet (its address
// being allocated) already counts as a live pod, with no address; once
// wired it carries its address and sits on the bridge.
func TestPlugMarksBeforeWire(t *testing.T) {
	node := nstest.New(t, "a veth pair for a pod")
	pod := nstest.New(t, "the pod's namespace")
	owner := ipam.Attachment{ContainerID: "c1", IfName: "eth0"}
	err := node.Do(func(ns.NetNS) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "weft0"}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		plugged, err := Plug(pod, owner, Port{Bridge: br, Hairpin: false, MTU: 1500})
		if err != nil {
			return err
		}
		live, err := Live("weft0")
		if err != nil || !maps.Equal(live, map[ipam.Attachment]netip.Addr{owner: netip.IPv4Unspecified()}) {
			t.Errorf("Live after Plug = %v, %v; want the pod, address 0.0.0.0", live, err)
		}
		addr := netip.MustParseAddr("172.7.21.2")
		res := &current.Result{IPs: []*current.IPConfig{{Address: net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(24, 32)}, Gateway: net.IPv4(172, 7, 21, 1)}}}
		if err := plugged.Wire(addr, res); err != nil {
			return err
		}
		live, err = Live("weft0")
		if err != nil || !maps.Equal(live, map[ipam.Attachment]netip.Addr{owner: addr}) {
			t.Errorf("Live after Wire = %v, %v; want the pod at %s", live, err, addr)
		}
		host, err := netlink.LinkByIndex(plugged.host.Index)
		if err != nil {
			return err
		}
		if want := "weft pod 172.7.21.2 c1 eth0 weft0 nohairpin"; host.Attrs().Alias != want {
			t.Errorf("node end marked %q, want %q", host.Attrs().Alias, want)
		}
		if pi, err := netlink.LinkGetProtinfo(host); err != nil || pi.Hairpin || host.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("node end: master %d (bridge %d), hairpin %t (%v); want on the bridge, hairpin off",
				host.Attrs().MasterIndex, br.Attrs().Index, pi.Hairpin, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
