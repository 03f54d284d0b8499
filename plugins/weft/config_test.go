package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/weft-cni/weft/pkg/ipam"
)

func TestLoadConfDefaults(t *testing.T) {
	conf, err := loadConf([]byte(`{"cniVersion":"1.1.0","name":"weft","type":"weft","etcdEndpoints":["http://10.4.7.12:2379"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Bridge != "weft0" || conf.IPAM.Type != "weft-ipam" || conf.SubnetFile != "/run/weft/subnet.env" ||
		!conf.Masquerade(nil) || conf.peerSync() != time.Minute || !conf.hairpin() {
		t.Fatalf("defaults not applied: %+v", conf)
	}
}

func TestLoadConfFields(t *testing.T) {
	conf, err := loadConf([]byte(`{"cniVersion":"1.1.0","name":"weft","type":"weft","bridge":"br9","mtu":1400,
		"ipMasq":false,"hairpinMode":false,"peerSyncInterval":0,"publicIP":"10.4.7.21","iface":"eth1",
		"subnetFile":"/run/x/subnet.env","etcdPrefix":"/x","ipam":{"type":"host-local"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Bridge != "br9" || conf.MTU != 1400 || conf.Masquerade(nil) || conf.hairpin() || conf.peerSync() != 0 ||
		conf.PublicIP != "10.4.7.21" || conf.Iface != "eth1" || conf.EtcdPrefix != "/x" || conf.IPAM.Type != "host-local" {
		t.Fatalf("fields not read: %+v", conf)
	}
}

func FuzzLoadConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"weft","type":"weft","etcdEndpoints":["http://10.4.7.12:2379"],"mtu":1450}`))
	f.Add([]byte(`{"cniVersion":"0.3.1","name":"w","type":"weft","bridge":"weft0","ipam":{"type":"weft-ipam","dataDir":"/var/lib/cni/weft"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		conf, err := loadConf(data)
		if err != nil {
			return
		}
		if conf.Bridge == "" || len(conf.Bridge) > 15 || strings.Contains(conf.Name, "/") || conf.IPAM.Type == "" {
			t.Fatalf("accepted an unsafe config: %+v", conf)
		}
		// Paths a request can reach: the IPAM plugin looked up in CNI_PATH,
		// the subnet file, the network's store directory.
		if strings.ContainsAny(conf.IPAM.Type, "/\\") || conf.IPAM.Type == ".." || !filepath.IsAbs(conf.SubnetFile) ||
			ipam.ValidateName("network name", conf.Name) != nil {
			t.Fatalf("accepted a config that escapes its paths: ipam %q, subnetFile %q, name %q", conf.IPAM.Type, conf.SubnetFile, conf.Name)
		}
		if c := conf.ipamConf; c != nil && !filepath.IsAbs(c.DataDir) {
			t.Fatalf("accepted an ipam section with dataDir %q", c.DataDir)
		}
		// ADD refuses an in-process ipam section that names another node.
		if c := conf.ipamConf; c != nil && c.SubnetFile != conf.SubnetFile && checkIPAMNodeSettings(conf) == nil {
			t.Fatalf("ADD would accept ipam subnetFile %q beside the plugin's %q", c.SubnetFile, conf.SubnetFile)
		}
	})
}

// TestExampleConflists: the conflists operators copy from conf/ (the file
// `make install` installs, and the one the DaemonSet's init container
// writes, with the node's address in place of __HOST_IP__) load as the
// plugin reads them.
func TestExampleConflists(t *testing.T) {
	file, err := os.ReadFile("../../conf/10-weft.conflist")
	if err != nil {
		t.Fatal(err)
	}
	yaml, err := os.ReadFile("../../conf/weft-daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(yaml), "10-weft.conflist: |\n")
	if !ok {
		t.Fatal("the DaemonSet holds no 10-weft.conflist")
	}
	var embedded strings.Builder
	for line := range strings.Lines(block) {
		if !strings.HasPrefix(line, "    ") {
			break
		}
		embedded.WriteString(strings.TrimPrefix(line, "    "))
	}
	for name, data := range map[string]string{
		"conf/10-weft.conflist":    string(file),
		"conf/weft-daemonset.yaml": strings.ReplaceAll(embedded.String(), "__HOST_IP__", "10.4.7.21"),
	} {
		list, err := libcni.ConfListFromBytes([]byte(data))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		weft := 0
		for _, p := range list.Plugins {
			if p.Network.Type != "weft" {
				continue
			}
			weft++
			var m map[string]any
			if err := json.Unmarshal(p.Bytes, &m); err != nil {
				t.Fatal(err)
			}
			m["name"], m["cniVersion"] = list.Name, list.CNIVersion
			stdin, _ := json.Marshal(m)
			if _, err := loadConf(stdin); err != nil {
				t.Errorf("%s: the weft plugin's config does not load: %v", name, err)
			}
		}
		if weft != 1 {
			t.Errorf("%s: %d weft plugins, want 1", name, weft)
		}
	}
}
