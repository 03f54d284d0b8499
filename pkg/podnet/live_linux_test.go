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
// bridge or off it (its bridge deleted); Reattach puts the marked ones that
// have no bridge back on it and leaves veths that are not weft's alone.
func TestLiveAndReattach(t *testing.T) {
	node := nstest.New(t, "veths on a bridge")
	err := node.Do(func(ns.NetNS) error {
		if live, err := Live(); err != nil || len(live) != 0 {
			t.Errorf("Live with no veths = %v, %v; want none", live, err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "weft0"}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		web, off := ipam.Attachment{ContainerID: "web", IfName: "eth0"}, ipam.Attachment{ContainerID: "off", IfName: "eth0"}
		for _, v := range []struct {
			name, alias string
			onBridge    bool
		}{
			{"vweb", mark(web, netip.MustParseAddr("172.7.21.2")), true},
			{"vplain", "", false}, // not ours
			{"voff", mark(off, netip.MustParseAddr("172.7.21.3")), false}, // its bridge deleted
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
		live, err := Live()
		want := map[ipam.Attachment]netip.Addr{web: netip.MustParseAddr("172.7.21.2"), off: netip.MustParseAddr("172.7.21.3")}
		if err != nil || !maps.Equal(live, want) {
			t.Errorf("Live = %v, %v; want %v", live, err, want)
		}
		bridge, err := netlink.LinkByName("weft0")
		if err != nil {
			return err
		}
		if put, err := Reattach(bridge, true); err != nil || put != 1 {
			t.Errorf("Reattach = %d, %v; want the one marked veth off the bridge", put, err)
		}
		for name, want := range map[string]bool{"vweb": true, "voff": true, "vplain": false} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if on := l.Attrs().MasterIndex == bridge.Attrs().Index; on != want {
				t.Errorf("%s on the bridge: %t, want %t", name, on, want)
			}
		}
		voff, err := netlink.LinkByName("voff")
		if err != nil {
			return err
		}
		if pi, err := netlink.LinkGetProtinfo(voff); err != nil || !pi.Hairpin {
			t.Errorf("voff put back without hairpin: %+v, %v", pi, err)
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
		plugged, err := Plug(pod, owner, 1500)
		if err != nil {
			return err
		}
		live, err := Live()
		if err != nil || !maps.Equal(live, map[ipam.Attachment]netip.Addr{owner: netip.IPv4Unspecified()}) {
			t.Errorf("Live after Plug = %v, %v; want the pod, address 0.0.0.0", live, err)
		}
		addr := netip.MustParseAddr("172.7.21.2")
		res := &current.Result{IPs: []*current.IPConfig{{Address: net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(24, 32)}, Gateway: net.IPv4(172, 7, 21, 1)}}}
		if err := plugged.Wire(addr, br, true, res); err != nil {
			return err
		}
		live, err = Live()
		if err != nil || !maps.Equal(live, map[ipam.Attachment]netip.Addr{owner: addr}) {
			t.Errorf("Live after Wire = %v, %v; want the pod at %s", live, err, addr)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
