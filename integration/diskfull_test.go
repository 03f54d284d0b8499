//go:build integration

package integration

import (
	"path/filepath"
	"testing"
)

// TestDelOnAFullDisk: the IPAM store's file system is full (a node under
// disk pressure, where kubelet evicts pods to free space). DEL still takes
// the pod off the node and succeeds, so the runtime can remove the sandbox
// and its disk; the address, which the store could not write down as free,
// stays allocated (never handed out twice) and is freed later by GC, since
// no interface carries it any more. host-local's DEL, which only unlinks a
// file, also works on a full disk.
func TestDelOnAFullDisk(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n := c.node(t, "node21", node21Addr, nil)
	pod := c.tp.PodNS(t, "a")
	n.add(t, pod)
	ipamDir := filepath.Join(n.dir, "ipam")
	full := t.TempDir()
	// `ip netns exec` runs the command in a mount namespace of its own, so
	// the full tmpfs over the store exists only for this DEL.
	script := `set -e
mount -t tmpfs -o size=256k weft-full "$1"
cp -a "$2/." "$1/"
dd if=/dev/zero of="$1/filler" bs=4k 2>/dev/null || true
mount --bind "$1" "$2"
shift 2
exec "$@"`
	args := []string{"sh", "-c", script, "sh", full, ipamDir,
		"env", "CNI_PATH=" + cniPath(t), "NETCONFPATH=" + n.confDir(), Bin(t, "cnitool"), "del", "weft", pod}
	if out, err := n.Try(args...); err != nil {
		t.Fatalf("DEL with the IPAM store's disk full: %v\n%s", err, out)
	}
	if out, err := TryIn(pod, "ip", "link", "show", "eth0"); err == nil {
		t.Errorf("the pod's eth0 is still there after DEL:\n%s", out)
	}
	if a := n.allocations(t); a != 1 {
		t.Fatalf("%d allocations after the DEL on a full disk, want the pod's still held", a)
	}
	if out, err := n.cnitool(t, "gc", c.tp.PodNS(t, "gc")); err != nil {
		t.Fatalf("GC: %v\n%s", err, out)
	}
	if a := n.allocations(t); a != 0 {
		t.Errorf("%d allocations after GC, want the gone pod's address freed", a)
	}
}
