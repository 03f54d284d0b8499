package masq

import (
	"testing"

	"github.com/coreos/go-iptables/iptables"
)

// TestJumpsFirst: the in-process check agrees with what iptables-nft stores,
// including when docker's rule sits on top.
func TestJumpsFirst(t *testing.T) {
	target := newNS(t)
	rules := Rules{Network: testNetwork, IPMasq: true}
	inNS(t, target, func(ipt *iptables.IPTables) error {
		if JumpsFirst() {
			t.Error("JumpsFirst in an empty namespace")
		}
		if _, err := Ensure(ipt, rules); err != nil {
			return err
		}
		if !JumpsFirst() {
			t.Error("JumpsFirst false after Ensure")
		}
		if err := ipt.Insert(TableNAT, "POSTROUTING", 1, "-s", "198.18.21.0/24", "!", "-o", "docker0", "-j", "MASQUERADE"); err != nil {
			return err
		}
		if JumpsFirst() {
			t.Error("JumpsFirst true with docker's rule on top")
		}
		if _, err := EnsureFront(ipt, rules); err != nil {
			return err
		}
		if !JumpsFirst() {
			t.Error("JumpsFirst false after EnsureFront")
		}
		return nil
	})
}
