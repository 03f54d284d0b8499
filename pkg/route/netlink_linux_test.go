package route

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/weft-cni/weft/internal/nstest"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// newNS creates a network namespace that is removed when the test ends.
func newNS(t *testing.T) ns.NetNS { return nstest.New(t, "programs routes") }

// addLink creates, in the calling thread's namespace, a veth pair whose
// both ends are up, with addr on the end called name, and returns its index.
// (A veth rather than a dummy: the dummy module is not everywhere.)
func addLink(name, addr string) (int, error) {
	link := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
	if err := netlink.LinkAdd(link); err != nil {
		return 0, fmt.Errorf("adding %s: %w", name, err)
	}
	peer, err := netlink.LinkByName(link.PeerName)
	if err != nil {
		return 0, err
	}
	if err := netlink.LinkSetUp(peer); err != nil {
		return 0, fmt.Errorf("setting %s up: %w", link.PeerName, err)
	}
	a, err := netlink.ParseAddr(addr)
	if err != nil {
		return 0, err
	}
	if err := netlink.AddrAdd(link, a); err != nil {
		return 0, fmt.Errorf("adding %s to %s: %w", addr, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return 0, fmt.Errorf("setting %s up: %w", name, err)
	}
	return link.Attrs().Index, nil
}

// expectRoutes compares List(network) with want, ignoring link indexes.
func expectRoutes(step string, want ...Route) error {
	got, err := Netlink{}.List(network)
	if err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	for i := range got {
		got[i].LinkIndex = 0
	}
	slices.SortFunc(got, compareRoutes)
	if !slices.Equal(got, want) {
		return fmt.Errorf("%s: routes\n got %v\nwant %v", step, got, want)
	}
	return nil
}

func TestNetlinkReconcile(t *testing.T) {
	target := newNS(t)
	err := target.Do(func(ns.NetNS) error {
		if _, err := addLink("seg0", "10.4.7.21/24"); err != nil {
			return err
		}
		// The bridge's subnet: a connected route Reconcile must leave alone.
		if _, err := addLink("bridge0", "172.7.21.1/24"); err != nil {
			return err
		}
		// The bridge's connected route and routes of other software inside
		// the cluster network are not weft's: List leaves them out and
		// pruning leaves them alone. A route of another protocol to a
		// peer's subnet (left by a weft that did not mark its routes) is
		// taken over.
		foreign := toNetlink(via("172.7.50.0/24", "10.4.7.50"))
		foreign.Protocol = unix.RTPROT_STATIC
		unmarked := toNetlink(peer22)
		unmarked.Protocol = unix.RTPROT_BOOT
		for _, r := range []*netlink.Route{foreign, unmarked} {
			if err := netlink.RouteAdd(r); err != nil {
				return err
			}
		}
		// A route outside the cluster network that List must not return.
		if err := (Netlink{}).Replace(via("10.50.0.0/16", "10.4.7.1")); err != nil {
			return err
		}

		res, err := Reconcile(Netlink{}, network, self, []Route{peer22, peer23}, false)
		if err != nil || res != (Result{Upserted: 2}) {
			return fmt.Errorf("first Reconcile = %+v, %v", res, err)
		}
		if err := expectRoutes("added", peer22, peer23); err != nil {
			return err
		}
		if res, err := Reconcile(Netlink{}, network, self, []Route{peer22, peer23}, true); err != nil || res != (Result{}) {
			return fmt.Errorf("Reconcile when in place = %+v, %v", res, err)
		}

		// The lease for 172.7.22.0/24 moved; 172.7.40.0/24 vanished while
		// the daemon was down.
		if err := netlink.RouteAdd(toNetlink(stale40)); err != nil {
			return err
		}
		res, err = Reconcile(Netlink{}, network, self, []Route{moved22, peer23}, false)
		if err != nil || res != (Result{Upserted: 1}) {
			return fmt.Errorf("Reconcile after move = %+v, %v", res, err)
		}
		if err := expectRoutes("replaced, stale kept", moved22, peer23, stale40); err != nil {
			return err
		}
		res, err = Reconcile(Netlink{}, network, self, []Route{moved22, peer23}, true)
		if err != nil || res != (Result{Removed: 1}) {
			return fmt.Errorf("pruning Reconcile = %+v, %v", res, err)
		}
		if err := expectRoutes("pruned", moved22, peer23); err != nil {
			return err
		}
		if err := kernelHas(pfx("172.7.50.0/24"), unix.RTPROT_STATIC); err != nil {
			return fmt.Errorf("after pruning: %w", err)
		}
		if err := kernelHas(self, unix.RTPROT_KERNEL); err != nil {
			return fmt.Errorf("after pruning: %w", err)
		}
		return checkUnreachable()
	})
	if err != nil {
		t.Fatal(err)
	}
	assertAbsentFromRoot(t)
}

// kernelHas checks that the main table holds exactly one route to dst, of
// protocol proto.
func kernelHas(dst netip.Prefix, proto netlink.RouteProtocol) error {
	routes, err := listMain(netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	var found []netlink.Route
	for _, r := range routes {
		if d, ok := prefixOf(r.Dst); r.Dst != nil && ok && d == dst {
			found = append(found, r)
		}
	}
	if len(found) != 1 || found[0].Protocol != proto {
		return fmt.Errorf("routes to %s: %v, want one of protocol %d", dst, found, proto)
	}
	return nil
}

// checkUnreachable: a peer off the segment fails with a clear error, and the
// other routes are still programmed.
func checkUnreachable() error {
	far := Route{Dst: pfx("172.7.24.0/24"), Gateway: ip("10.9.0.24")}
	if err := (Netlink{}).Replace(far); !errors.Is(err, syscall.ENETUNREACH) {
		return fmt.Errorf("Replace via an unreachable gateway = %v, want ENETUNREACH", err)
	}
	res, err := Reconcile(Netlink{}, network, self, []Route{moved22, peer23, far, peer25}, true)
	want := "route to 172.7.24.0/24 via 10.9.0.24: gateway not directly reachable; host-gw needs peers on one segment"
	if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, syscall.ENETUNREACH) {
		return fmt.Errorf("Reconcile with an unreachable gateway: %v", err)
	}
	if res != (Result{Upserted: 1, Failed: 1}) {
		return fmt.Errorf("Reconcile with an unreachable gateway = %+v", res)
	}
	if err := expectRoutes("unreachable", moved22, peer23, peer25); err != nil {
		return err
	}
	// Deleting what is gone is no error.
	if err := (Netlink{}).Delete(far); err != nil {
		return fmt.Errorf("deleting a missing route: %w", err)
	}
	return nil
}

var peer25 = via("172.7.25.0/24", "10.4.7.25")

// assertAbsentFromRoot reads, only, the namespace the test runs in and fails
// if a route the test programmed leaked there.
func assertAbsentFromRoot(t *testing.T) {
	t.Helper()
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Gw != nil && (r.Gw.Equal(net.ParseIP("10.4.7.22")) || r.Gw.Equal(net.ParseIP("10.4.7.32"))) {
			t.Errorf("route leaked into the root namespace: %s", r)
		}
	}
}
