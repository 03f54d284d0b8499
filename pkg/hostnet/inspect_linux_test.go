package hostnet

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-cni/weft/internal/nstest"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

// TestEnsureAndInspectBridge: EnsureBridge gives the bridge its gateway and
// fixed MAC, and Inspect reads back those and the marks.
func TestEnsureAndInspectBridge(t *testing.T) {
	node := nstest.New(t, "a bridge")
	file := subnetfile.ForLease(netip.MustParsePrefix("172.7.0.0/16"), netip.MustParsePrefix("172.7.21.0/24"), 1500, true)
	err := node.Do(func(ns.NetNS) error {
		if st, err := Inspect("weft0"); err != nil || !st.Missing {
			t.Errorf("Inspect before EnsureBridge = %+v, %v; want missing", st, err)
		}
		link, err := EnsureBridge("weft0", file, 1500)
		if err != nil {
			return err
		}
		st, err := Inspect("weft0")
		if err != nil {
			return err
		}
		if st.MAC.String() != "0a:58:ac:07:15:01" || !slices.Contains(st.Addrs, netip.MustParsePrefix("172.7.21.1/24")) || st.Lease.IsValid() {
			t.Errorf("after EnsureBridge: %+v", st)
		}
		now := time.Unix(1732470000, 0)
		if err := MarkReady(link, file, now); err != nil {
			return err
		}
		if err := MarkDegraded(link, file, now.Add(time.Minute)); err != nil {
			return err
		}
		st, err = Inspect("weft0")
		if err != nil {
			return err
		}
		if st.Lease != file.Lease() || !st.Synced.Equal(now) || !st.Retry.Equal(now.Add(time.Minute+DegradedRetry)) {
			t.Errorf("marks read back as %+v", st)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
