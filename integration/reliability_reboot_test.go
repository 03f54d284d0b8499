//go:build integration

package integration

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestReliabilityNodeReboot: node21 reboots (its namespace and its pods'
// are destroyed and recreated, the subnet file is gone as /run is a tmpfs;
// the IPAM store is kept as on disk, or wiped as on a tmpfs). It gets its
// old subnet back from etcd, the lease is not duplicated, new pods get
// addresses no live pod holds and reach the other node's pods, and the
// runtime's DEL of the dead pods (netns gone) frees their addresses.
func TestReliabilityNodeReboot(t *testing.T) {
	for _, tc := range []struct {
		name      string
		wipeStore bool
	}{{"store kept", false}, {"store wiped", true}} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, seedNetwork)
			n21, n22 := c.node(t, "node21", node21Addr, nil), c.node(t, "node22", node22Addr, nil)
			old := []string{c.tp.PodNS(t, "a1"), c.tp.PodNS(t, "a2")}
			oldIPs := []netip.Addr{n21.add(t, old[0]), n21.add(t, old[1])}
			b := c.tp.PodNS(t, "b")
			ipB := n22.add(t, b)
			s21 := n21.subnet(t)
			leasesBefore := c.leases(t)

			for _, pod := range old {
				KillPod(t, pod)
			}
			n21.Reboot(t)
			for _, f := range []string{"subnet.env", "weft.lock"} {
				if err := os.Remove(filepath.Join(n21.dir, f)); err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
			}
			if tc.wipeStore {
				if err := os.RemoveAll(filepath.Join(n21.dir, "ipam")); err != nil {
					t.Fatal(err)
				}
			}
			if out := n21.Run(t, "ip", "-o", "link", "show", "type", "bridge"); out != "" {
				t.Fatalf("the rebooted node still has a bridge: %s", out)
			}

			var podsAfter []string
			var ipsAfter []netip.Addr
			for _, name := range []string{"r1", "r2", "r3"} {
				pod := c.tp.PodNS(t, name)
				podsAfter = append(podsAfter, pod)
				ipsAfter = append(ipsAfter, n21.add(t, pod))
			}
			if got := n21.subnet(t); got != s21 {
				t.Errorf("after the reboot node21 holds %s, before %s", got, s21)
			}
			if after := c.leases(t); len(after) != len(leasesBefore) {
				t.Errorf("leases after the reboot %v, before %v", after, leasesBefore)
			} else {
				for k, v := range leasesBefore {
					if after[k] != v {
						t.Errorf("lease %s changed across the reboot: %q -> %q", k, v, after[k])
					}
				}
			}
			live := append(slices.Clone(ipsAfter), ipB)
			for i, ip := range ipsAfter {
				if !s21.Contains(ip) {
					t.Errorf("pod %d got %s outside %s", i, ip, s21)
				}
				if slices.Index(live, ip) != i {
					t.Errorf("address %s handed out twice among live pods %v", ip, live)
				}
				if !tc.wipeStore && slices.Contains(oldIPs, ip) {
					t.Errorf("address %s of a dead pod handed out before its DEL, with the store kept", ip)
				}
			}
			for _, pod := range podsAfter {
				WaitFor(t, 10*time.Second, "a pod started after the reboot reaches node22's pod", func() (bool, error) {
					return Ping(pod, ipB) == nil, nil
				})
			}
			WaitFor(t, 10*time.Second, "node22's pod reaches the rebooted node's pods", func() (bool, error) {
				return Ping(b, ipsAfter[0]) == nil, nil
			})

			// The runtime deletes the dead sandboxes; their netns is gone.
			for _, pod := range old {
				n21.del(t, pod)
			}
			if got := n21.allocations(t); got != len(podsAfter) {
				t.Errorf("%d allocations after the dead pods' DEL, want %d (the live pods)", got, len(podsAfter))
			}
			if got := veths(t, n21); got != len(podsAfter) {
				t.Errorf("%d veths on the rebooted node, want %d", got, len(podsAfter))
			}
		})
	}
}

// TestReliabilityStoreWipedWhilePodsRun: the IPAM store is removed (an
// operator "cleaning" /var/lib/cni, a tmpfs remounted) while pods hold
// addresses. The next ADD learns the live pods' addresses from their veths
// before it hands any out: no duplicate, and the live pods' DELs and the
// runtime's GC still account for every address.
func TestReliabilityStoreWipedWhilePodsRun(t *testing.T) {
	c := newCluster(t, seedNetwork)
	n21 := c.node(t, "node21", node21Addr, nil)
	var pods []string
	var ips []netip.Addr
	for _, name := range []string{"a1", "a2", "a3"} {
		pod := c.tp.PodNS(t, name)
		pods = append(pods, pod)
		ips = append(ips, n21.add(t, pod))
	}
	n21.del(t, pods[1]) // a gap: the freed address may be handed out again
	if err := os.RemoveAll(filepath.Join(n21.dir, "ipam")); err != nil {
		t.Fatal(err)
	}

	live := []netip.Addr{ips[0], ips[2]}
	for _, name := range []string{"b1", "b2", "b3"} {
		pod := c.tp.PodNS(t, name)
		ip := n21.add(t, pod)
		if slices.Contains(live, ip) {
			t.Fatalf("%s handed to %s while a running pod holds it (live %v)", ip, name, live)
		}
		live = append(live, ip)
		pods = append(pods, pod)
	}
	if got := n21.allocations(t); got != len(live) {
		t.Errorf("%d allocations after the wipe, want %d (every live pod, adopted or new)", got, len(live))
	}
	// Every pod answers at its own address: nothing was handed out twice.
	for _, ip := range live {
		WaitFor(t, 10*time.Second, "pod "+ip.String()+" answers", func() (bool, error) {
			return n21.Ping(ip) == nil, nil
		})
	}
	for _, pod := range []string{pods[0], pods[2]} {
		n21.del(t, pod)
	}
	if got := n21.allocations(t); got != 3 {
		t.Errorf("%d allocations after the adopted pods' DEL, want 3", got)
	}
}
