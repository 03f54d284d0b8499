// Package nstest gives kernel tests a network namespace of their own, so
// nothing they program ever reaches the machine's root namespace.
package nstest

import (
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
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
