// Package nstest gives kernel tests a network namespace of their own, so
// nothing they program ever reaches the machine's root namespace.
package nstest

import (
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// New creates a network namespace that is removed when the test ends. It
// skips the test, saying why, when not root.
func New(t *testing.T, why string) ns.NetNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: " + why + " in a network namespace the test creates")
	}
	target, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("creating network namespace: %v", err)
	}
	t.Cleanup(func() {
		target.Close()
		if err := testutils.UnmountNS(target); err != nil {
			t.Errorf("removing network namespace: %v", err)
		}
	})
	return target
}

// Uplink gives the namespace the calling thread is in (inside ns.Do on a
// namespace from New) a link "up0", veth to "up1", holding addrs in order,
// both ends up: the node's uplink to its segment. It goes with the
// namespace.
func Uplink(t *testing.T, addrs ...string) netlink.Link {
	t.Helper()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up1"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	link, err := netlink.LinkByName("up0")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range addrs {
		a, err := netlink.ParseAddr(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.AddrAdd(link, a); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"up0", "up1"} {
		if err := netlink.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	return link
}
