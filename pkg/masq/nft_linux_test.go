package masq

import (
	"testing"

	"github.com/coreos/go-iptables/iptables"
)

// TestJumpsInPlace: the in-process check agrees with what iptables-nft
// stores: docker's rule on top of nat POSTROUTING displaces our jump, a
// policy engine's rule on top of filter FORWARD does not.
func TestJumpsInPlace(t *testing.T) {
	target := newNS(t)
	rules := Rules{Network: testNetwork, IPMasq: true}
	inNS(t, target, func(ipt *iptables.IPTables) error {
		if JumpsInPlace() {
			t.Error("JumpsInPlace in an empty namespace")
		}
		if _, err := Ensure(ipt, rules); err != nil {
			return err
		}
		if !JumpsInPlace() {
			t.Error("JumpsInPlace false after Ensure")
		}
		if err := ipt.Insert(TableFilter, "FORWARD", 1, "-m", "comment", "--comment", "policy engine", "-j", "ACCEPT"); err != nil {
			return err
		}
		if !JumpsInPlace() {
			t.Error("JumpsInPlace false with another rule on top of filter FORWARD")
		}
		if err := ipt.Insert(TableNAT, "POSTROUTING", 1, "-s", "198.18.21.0/24", "!", "-o", "docker0", "-j", "MASQUERADE"); err != nil {
			return err
		}
		if JumpsInPlace() {
			t.Error("JumpsInPlace true with docker's rule on top of nat POSTROUTING")
		}
		if _, err := EnsureFront(ipt, rules); err != nil {
			return err
		}
		if !JumpsInPlace() {
			t.Error("JumpsInPlace false after EnsureFront")
		}
		if err := ipt.Delete(TableFilter, "FORWARD", jumpTo(ChainForward)...); err != nil {
			return err
		}
		if JumpsInPlace() {
			t.Error("JumpsInPlace true with no jump in filter FORWARD")
		}
		return nil
	})
}
