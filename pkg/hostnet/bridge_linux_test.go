package hostnet

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weft-cni/weft/internal/nstest"
	"github.com/weft-cni/weft/pkg/route"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

// routeDev returns the name of the link the kernel sends ip out of.
func routeDev(t *testing.T, ip string) string {
	t.Helper()
	routes, err := netlink.RouteGet(net.ParseIP(ip))
	if err != nil || len(routes) == 0 {
		t.Fatalf("route get %s = %v, %v", ip, routes, err)
	}
	link, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		t.Fatal(err)
	}
	return link.Attrs().Name
}

// TestEnsureBridgeDropsPeerRoutesToOwnSubnet: a node that takes a subnet a
// peer held (a new lease after its address or the network config changed,
// with the daemon down when the peer left) may still have weft's route to
// that peer for it. The kernel appends the bridge's connected route behind
// it, so the stale route wins: the node's own pods are sent to the old
// holder. EnsureBridge removes weft's routes inside the node's own subnet
// and leaves other software's alone.
func TestEnsureBridgeDropsPeerRoutesToOwnSubnet(t *testing.T) {
	node := nstest.New(t, "a bridge and routes")
	file := subnetfile.ForLease(netip.MustParsePrefix("172.7.0.0/16"), netip.MustParsePrefix("172.7.22.0/24"), 1500, true)
	err := node.Do(func(ns.NetNS) error {
		up := nstest.Uplink(t, "10.4.7.21/24")
		for _, r := range []struct {
			dst, gw string
			proto   netlink.RouteProtocol
		}{
			{"172.7.22.0/24", "10.4.7.22", route.Protocol},            // the old holder's subnet
			{"172.7.22.128/25", "10.4.7.22", route.Protocol},          // before SubnetLen changed
			{"172.7.22.64/26", "10.4.7.23", netlink.RouteProtocol(4)}, // an operator's (static)
		} {
			_, dst, _ := net.ParseCIDR(r.dst)
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Dst: dst, Gw: net.ParseIP(r.gw), Protocol: r.proto}); err != nil {
				t.Fatalf("adding route to %s: %v", r.dst, err)
			}
		}
		for range 2 {
			if _, err := EnsureBridge("weft0", file, 1500); err != nil {
				return err
			}
			for _, ip := range []string{"172.7.22.5", "172.7.22.130"} {
				if dev := routeDev(t, ip); dev != "weft0" {
					t.Errorf("route to own pod %s leaves by %s, want weft0", ip, dev)
				}
			}
			if dev := routeDev(t, "172.7.22.70"); dev != "up0" {
				t.Errorf("operator's route to 172.7.22.64/26 gone: 172.7.22.70 leaves by %s", dev)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestEnsureBridgeReplacesOldAddresses: a bridge left with the addresses of
// an older lease, a primary and secondaries in one subnet, gets the new
// gateway in one call. Removing the primary takes the kernel's secondaries
// with it (promote_secondaries off), so they must not then fail to go.
func TestEnsureBridgeReplacesOldAddresses(t *testing.T) {
	node := nstest.New(t, "a bridge")
	old := subnetfile.ForLease(netip.MustParsePrefix("172.7.0.0/16"), netip.MustParsePrefix("172.7.21.0/24"), 1500, true)
	file := subnetfile.ForLease(netip.MustParsePrefix("172.7.0.0/16"), netip.MustParsePrefix("172.7.22.0/24"), 1500, true)
	err := node.Do(func(ns.NetNS) error {
		link, err := EnsureBridge("weft0", old, 1500)
		if err != nil {
			return err
		}
		for _, a := range []string{"172.7.21.9/24", "172.7.21.10/24"} {
			addr, _ := netlink.ParseAddr(a)
			if err := netlink.AddrAdd(link, addr); err != nil {
				return err
			}
		}
		if _, err := EnsureBridge("weft0", file, 1500); err != nil {
			t.Fatalf("EnsureBridge for the new lease: %v", err)
		}
		st, err := Inspect("weft0")
		if err != nil {
			return err
		}
		if want := []netip.Prefix{netip.MustParsePrefix("172.7.22.1/24")}; !slices.Equal(st.Addrs, want) {
			t.Errorf("addresses = %v, want %v", st.Addrs, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
