//go:build integration

package integration

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// smallSubnetNetwork leases /29s: five pod addresses per node.
const smallSubnetNetwork = `{"Network": "172.7.0.0/16", "SubnetLen": 29, "Backend": {"Type": "host-gw"}}`

// fullNode is a node whose /29 is full: five pods, with their namespaces
// and addresses.
func fullNode(t *testing.T) (*cluster, *node, []string, []netip.Addr) {
	c := newCluster(t, smallSubnetNetwork)
	n := c.node(t, "node21", node21Addr, nil)
	var pods []string
	var ips []netip.Addr
	for i := range 5 {
		pod := c.tp.PodNS(t, fmt.Sprintf("p%d", i))
		pods, ips = append(pods, pod), append(ips, n.add(t, pod))
	}
	return c, n, pods, ips
}

// TestFullSubnetReclaimsGonePods: a node's subnet is full and two of its
// pods died without a DEL (their namespaces gone, as after a node crash or
// a runtime that lost its state). The next ADDs get those two addresses
// back instead of failing, never one a running pod holds; every pod answers
// at its own address; when the subnet is full of running pods, an ADD fails
// with the subnet full and changes nothing; the runtime's late DELs of the
// dead pods succeed and free nothing else.
func TestFullSubnetReclaimsGonePods(t *testing.T) {
	c, n, pods, ips := fullNode(t)
	dead := []string{pods[1], pods[3]}
	for _, pod := range dead {
		KillPod(t, pod)
	}
	// The kernel removes a dead namespace's veths in the background.
	WaitFor(t, 10*time.Second, "the dead pods' veths gone", func() (bool, error) { return veths(t, n) == 3, nil })

	// weft status names the two holders that are gone.
	status := func() string {
		out, _ := n.Try(Bin(t, "weft"), "status", "--etcd-endpoints="+c.endpoint, "--iface=eth0",
			"--subnet-file="+n.dir+"/subnet.env", "--ipam-data-dir="+n.dir+"/ipam", "--cni-network=weft")
		return out
	}
	if out := status(); !strings.Contains(out, "ok    ipam") || !strings.Contains(out, "5 of 5 addresses") ||
		!strings.Contains(out, "2 held by pods gone without a DEL") {
		t.Errorf("weft status with two pods gone in a full subnet:\n%s", out)
	}

	live := []netip.Addr{ips[0], ips[2], ips[4]}
	livePods := []string{pods[0], pods[2], pods[4]}
	for _, name := range []string{"q1", "q2"} {
		pod := c.tp.PodNS(t, name)
		out, err := n.cnitool(t, "add", pod)
		if err != nil {
			t.Fatalf("ADD %s in a subnet full of two dead pods' addresses: %v\n%s", name, err, out)
		}
		ip := resultIP(t, out)
		if slices.Contains(live, ip) {
			t.Fatalf("%s handed to %s while a running pod holds it (running %v)", ip, name, live)
		}
		if !slices.Contains([]netip.Addr{ips[1], ips[3]}, ip) {
			t.Errorf("%s got %s, want one of the dead pods' %s, %s", name, ip, ips[1], ips[3])
		}
		live, livePods = append(live, ip), append(livePods, pod)
	}
	for i, from := range livePods {
		for j, ip := range live {
			if i != j {
				if err := Ping(from, ip); err != nil {
					t.Errorf("pod at %s cannot reach the pod at %s: %v", live[i], ip, err)
				}
			}
		}
	}

	if out := status(); !strings.Contains(out, "FAIL  ipam") || !strings.Contains(out, "full: all 5 addresses held by running pods") {
		t.Errorf("weft status with the subnet full of running pods:\n%s", out)
	}
	before := n.Run(t, "cat", n.dir+"/ipam/weft/state")
	out, err := n.cnitool(t, "add", c.tp.PodNS(t, "extra"))
	if err == nil || !strings.Contains(out+err.Error(), "no free address") {
		t.Errorf("ADD with every address held by a running pod: %v %s, want it to fail with the subnet full", err, out)
	}
	if after := n.Run(t, "cat", n.dir+"/ipam/weft/state"); after != before {
		t.Errorf("the failed ADD changed the store:\n%s\nafter:\n%s", before, after)
	}
	if got := veths(t, n); got != len(live) {
		t.Errorf("%d veths after the failed ADD, want %d (the running pods')", got, len(live))
	}

	for _, pod := range dead {
		n.del(t, pod)
	}
	if got := n.allocations(t); got != len(live) {
		t.Errorf("%d allocations after the dead pods' DELs, want %d (the running pods)", got, len(live))
	}
}

// TestFullSubnetKeepsUnmarkedPods: one running pod's veth carries no mark,
// as a pod added by a weft from before the marks does after an upgrade,
// and two pods died without a DEL. A full subnet cannot tell which address
// the unmarked pod holds, so the next ADDs free nothing and fail with the
// subnet full; above all, none of them is given the unmarked pod's address.
func TestFullSubnetKeepsUnmarkedPods(t *testing.T) {
	c, n, pods, ips := fullNode(t)
	veth := ""
	for _, line := range strings.Split(n.Run(t, "ip", "-o", "link", "show", "type", "veth"), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.Contains(line, "alias weft pod "+ips[0].String()+" ") {
			veth, _, _ = strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		}
	}
	if veth == "" {
		t.Fatalf("no veth marked with %s", ips[0])
	}
	n.Run(t, "ip", "link", "set", "dev", veth, "alias", "")
	if out := n.Run(t, "ip", "-o", "link", "show", "dev", veth); strings.Contains(out, "alias") {
		t.Fatalf("%s kept its mark: %s", veth, out)
	}
	for _, pod := range []string{pods[1], pods[3]} {
		KillPod(t, pod)
	}
	WaitFor(t, 10*time.Second, "the dead pods' veths gone", func() (bool, error) { return veths(t, n) == 3, nil })

	for _, name := range []string{"q1", "q2", "q3"} {
		out, err := n.cnitool(t, "add", c.tp.PodNS(t, name))
		if err != nil {
			if !strings.Contains(out+err.Error(), "no free address") {
				t.Errorf("ADD %s: %v %s, want the subnet full", name, err, out)
			}
			continue
		}
		if ip := resultIP(t, out); ip == ips[0] {
			t.Fatalf("%s handed to %s while the running, unmarked pod holds it", ip, name)
		}
	}
	if state := n.Run(t, "cat", n.dir+"/ipam/weft/state"); !strings.Contains(state, "ip "+ips[0].String()+" ") {
		t.Errorf("the unmarked pod's address %s was freed:\n%s", ips[0], state)
	}
}
