//go:build integration

package integration

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weft-cni/weft/internal/testcerts"
)

// TestReliabilityEtcdTLS: etcd requires client certificates (made here);
// the plugin (netconf etcdCAFile/etcdCertFile/etcdKeyFile) and the daemon
// (--etcd-cafile/--etcd-certfile/--etcd-keyfile) work with the right ones;
// a wrong CA or an untrusted client certificate gets no lease.
func TestReliabilityEtcdTLS(t *testing.T) {
	RequireRoot(t)
	f, err := testcerts.Write(t.TempDir(), net.ParseIP(etcdAddr.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{tp: NewTopology(t)}
	c.seg = c.tp.Segment("lan")
	c.etcd = c.tp.Host("etcd", c.seg, etcdAddr)
	p := c.etcd.Start(t, Bin(t, "weft-devetcd"), "--data-dir", t.TempDir(),
		"--listen-client-urls", "https://"+etcdAddr.Addr().String()+":2379",
		"--cert-file", f.ServerCert, "--key-file", f.ServerKey, "--trusted-ca-file", f.CA)
	c.endpoint = strings.TrimPrefix(p.WaitLine(t, 60e9, "ready "), "ready ")
	c.etcd.Run(t, "env", "ETCDCTL_API=3", "etcdctl", "--endpoints", c.endpoint,
		"--cacert", f.CA, "--cert", f.ClientCert, "--key", f.ClientKey, "put", "/coreos.com/network/config", seedNetwork)
	tlsConf := func(ca, cert, key string) map[string]any {
		return map[string]any{"etcdCAFile": ca, "etcdCertFile": cert, "etcdKeyFile": key}
	}

	t.Run("plugin with the right certificates", func(t *testing.T) {
		n := c.node(t, "node21", node21Addr, tlsConf(f.CA, f.ClientCert, f.ClientKey))
		pod := c.tp.PodNS(t, "a")
		if ip := n.add(t, pod); !n.subnet(t).Contains(ip) {
			t.Errorf("address %s outside %s", ip, n.subnet(t))
		}
		n.del(t, pod)
	})
	t.Run("daemon with the right certificates", func(t *testing.T) {
		n := c.node(t, "node22", node22Addr, nil)
		n.startDaemon(t, "--etcd-cafile="+f.CA, "--etcd-certfile="+f.ClientCert, "--etcd-keyfile="+f.ClientKey)
		n.waitReady(t)
	})
	for i, bad := range []struct{ name, ca, cert, key string }{
		{"wrong CA", f.RogueCA, f.ClientCert, f.ClientKey},
		{"untrusted client certificate", f.CA, f.RogueClientCert, f.RogueClientKey},
		{"no client certificate", f.CA, "", ""},
	} {
		t.Run("plugin refused: "+bad.name, func(t *testing.T) {
			addr := netip.MustParsePrefix(fmt.Sprintf("10.4.7.%d/24", 23+i))
			n := c.node(t, fmt.Sprintf("node%d", 23+i), addr, tlsConf(bad.ca, bad.cert, bad.key))
			out, err := n.cnitool(t, "add", c.tp.PodNS(t, fmt.Sprintf("bad%d", i)))
			if err == nil {
				t.Fatalf("ADD succeeded: %s", out)
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), "etcd TLS") {
				t.Errorf("the error does not name the TLS failure: %v", err)
			}
			if n.allocations(t) != 0 {
				t.Error("an address was allocated")
			}
			if _, err := os.Stat(filepath.Join(n.dir, "subnet.env")); !os.IsNotExist(err) {
				t.Errorf("the refused ADD left a subnet file (stat: %v)", err)
			}
			if _, err := n.Try("ip", "link", "show", "weft0"); err == nil {
				t.Error("the refused ADD created the bridge")
			}
		})
	}
}
