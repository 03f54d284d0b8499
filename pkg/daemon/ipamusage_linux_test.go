package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weft-cni/weft/internal/nstest"
	"github.com/weft-cni/weft/pkg/ipam"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

// TestStatusIPAMWithUnmarkedPort: a full subnet whose holders are all gone
// (no veth on the node) while the bridge has a port with no mark (a pod
// from before the marks). The ADD's reclaim frees nothing then, so the
// subnet stays full; `weft status` must fail and say why, not claim that
// running pods hold every address.
func TestStatusIPAMWithUnmarkedPort(t *testing.T) {
	node := nstest.New(t, "a bridge with an unmarked port")
	cfg := &Config{Bridge: "weft0", IPAMDataDir: t.TempDir(), CNINetwork: "weft"}
	file := &subnetfile.File{Network: netip.MustParsePrefix("172.7.0.0/16"), Subnet: netip.MustParsePrefix("172.7.21.1/29")}
	store, err := ipam.OpenDiskStore(cfg.IPAMDataDir, cfg.CNINetwork)
	if err != nil {
		t.Fatal(err)
	}
	pool := ipam.NewPool(store, file.Lease())
	for i := range 5 {
		if _, err := pool.Allocate(context.Background(), ipam.Attachment{ContainerID: fmt.Sprintf("gone%d", i), IfName: "eth0"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	var r Report
	err = node.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "weft0"}}); err != nil {
			return err
		}
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vlegacy"}, PeerName: "vlegacyp"}); err != nil {
			return err
		}
		br, err := netlink.LinkByName("weft0")
		if err != nil {
			return err
		}
		l, err := netlink.LinkByName("vlegacy")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(l, br); err != nil {
			return err
		}
		statusIPAM(&r, cfg, StatusDeps{IPAM: IPAMUsage(cfg)}, file)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Checks) != 1 {
		t.Fatalf("checks %+v, want one ipam check", r.Checks)
	}
	c := r.Checks[0]
	if c.OK || strings.Contains(c.Detail, "held by running pods") || !strings.Contains(c.Detail, "vlegacy") {
		t.Errorf("ipam check %+v, want a failure naming the unmarked port vlegacy, not running pods", c)
	}
}
