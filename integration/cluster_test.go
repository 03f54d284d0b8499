//go:build integration

package integration

import (
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// seedNetwork is the seed's cluster network config.
const seedNetwork = `{"Network": "172.7.0.0/16", "Backend": {"Type": "host-gw"}}`

// cluster is a segment with an etcd host and weft nodes on it.
type cluster struct {
	tp       *Topology
	seg      *Segment
	etcd     *Host
	endpoint string
}

// node is a host running the weft plugin with its own state directory (the
// namespaces share one filesystem, so each node gets its own subnet file and
// IPAM directory).
type node struct {
	*Host
	c   *cluster
	dir string
}

// newCluster starts etcd at 10.4.7.12 and stores the network config.
func newCluster(t *testing.T, network string) *cluster {
	RequireRoot(t)
	tp := NewTopology(t)
	seg := tp.Segment("lan")
	etcdHost := tp.Host("etcd", seg, etcdAddr)
	c := &cluster{tp: tp, seg: seg, etcd: etcdHost}
	c.endpoint = tp.StartEtcd(t, etcdHost)
	c.etcdctl(t, "put", "/coreos.com/network/config", network)
	return c
}

// etcdctl runs etcdctl (v3 API) from the etcd host.
func (c *cluster) etcdctl(t testing.TB, args ...string) string {
	t.Helper()
	return c.etcd.Run(t, append([]string{"env", "ETCDCTL_API=3", "etcdctl", "--endpoints", c.endpoint}, args...)...)
}

// leases returns the subnet keys in etcd with their values.
func (c *cluster) leases(t testing.TB) map[string]string {
	out := c.etcdctl(t, "get", "--prefix", "/coreos.com/network/subnets/")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	m := map[string]string{}
	for i := 0; i+1 < len(lines); i += 2 {
		m[lines[i]] = lines[i+1]
	}
	return m
}

// node adds a host at addr with a weft conflist; extra plugin fields
// override the defaults (peerSyncInterval 0, so every ADD sees new peers).
func (c *cluster) node(t *testing.T, name string, addr netip.Prefix, extra map[string]any) *node {
	n := &node{Host: c.tp.Host(name, c.seg, addr), c: c, dir: t.TempDir()}
	plugin := map[string]any{
		"type": "weft", "iface": "eth0", "etcdEndpoints": []string{c.endpoint},
		"subnetFile": filepath.Join(n.dir, "subnet.env"), "peerSyncInterval": 0,
		"ipam": map[string]any{"type": "weft-ipam", "dataDir": filepath.Join(n.dir, "ipam")},
	}
	for k, v := range extra {
		plugin[k] = v
	}
	n.writeConflist(t, map[string]any{"cniVersion": "1.1.0", "name": "weft", "plugins": []any{plugin}})
	return n
}

// setPluginField sets key in the weft plugin's section of n's conflist.
func (n *node) setPluginField(t testing.TB, key string, value any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(n.confDir(), "10-weft.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatal(err)
	}
	list["plugins"].([]any)[0].(map[string]any)[key] = value
	n.writeConflist(t, list)
}

func (n *node) confDir() string { return filepath.Join(n.dir, "net.d") }

func (n *node) writeConflist(t testing.TB, list map[string]any) {
	t.Helper()
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(n.confDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.confDir(), "10-weft.conflist"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// cniPath holds weft, weft-ipam and the reference plugins.
func cniPath(t testing.TB) string {
	Bin(t, "weft")
	Bin(t, "cnitool")
	return filepath.Join(RepoRoot(), "bin") + ":" + filepath.Join(RepoRoot(), "bin", "ref")
}

// cnitool runs `cnitool VERB weft POD` in the node, as a runtime would: one
// process per call, the plugins in the node's namespace. cnitool caches
// each ADD's result on the host until the DEL; PodNS's cleanup removes
// what is left.
func (n *node) cnitool(t testing.TB, verb, pod string, env ...string) (string, error) {
	args := append([]string{"env", "CNI_PATH=" + cniPath(t), "NETCONFPATH=" + n.confDir()}, env...)
	args = append(args, Bin(t, "cnitool"), verb, "weft", pod)
	return n.Try(args...)
}

// add attaches pod and returns its address.
func (n *node) add(t testing.TB, pod string) netip.Addr {
	t.Helper()
	out, err := n.cnitool(t, "add", pod)
	if err != nil {
		t.Fatalf("ADD %s on %s: %v", pod, n.Name, err)
	}
	return resultIP(t, out)
}

func (n *node) del(t testing.TB, pod string) {
	t.Helper()
	if out, err := n.cnitool(t, "del", pod); err != nil {
		t.Fatalf("DEL %s on %s: %v\n%s", pod, n.Name, err, out)
	}
}

// resultIP is the first address of a CNI result; it fails the test when
// there is none (so it must not run in a goroutine; use resultAddr there).
func resultIP(t testing.TB, out string) netip.Addr {
	t.Helper()
	ip, err := resultAddr(out)
	if err != nil {
		t.Fatal(err)
	}
	return ip
}

// resultAddr is the first address of a CNI result, or an error: for
// goroutines, which must not call t.Fatal.
func resultAddr(out string) (netip.Addr, error) {
	var res struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.IPs) == 0 {
		return netip.Addr{}, fmt.Errorf("no address in CNI result %q: %v", out, err)
	}
	p, err := netip.ParsePrefix(res.IPs[0].Address)
	if err != nil {
		return netip.Addr{}, err
	}
	return p.Addr(), nil
}

// subnet reads the node's leased subnet from its subnet file.
func (n *node) subnet(t testing.TB) netip.Prefix {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(n.dir, "subnet.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "FLANNEL_SUBNET="); ok {
			return netip.MustParsePrefix(v).Masked()
		}
	}
	t.Fatalf("no FLANNEL_SUBNET in %s", data)
	return netip.Prefix{}
}

// allocations counts the addresses in the node's IPAM store.
func (n *node) allocations(t testing.TB) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(n.dir, "ipam", "weft", "state"))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "\nip ") // the first line is the header
}

// natRules is `iptables -t nat -S POSTROUTING` in the node.
func (n *node) natRules(t testing.TB) []string {
	return strings.Split(strings.TrimSpace(n.Run(t, "iptables", "-t", "nat", "-S", "POSTROUTING")), "\n")
}

func (n *node) String() string { return fmt.Sprintf("%s(%s)", n.Name, n.IP()) }

// cnitoolID is the container ID cnitool derives from a netns path.
func cnitoolID(netns string) string {
	sum := sha512.Sum512([]byte(netns))
	return fmt.Sprintf("cnitool-%x", sum[:10])
}
