package ipamcni

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoadConfig: whatever weft-ipam is fed, an accepted config has an
// absolute data dir and a network name that is safe as a directory name,
// and its prevResult decodes or is refused without a panic.
func FuzzLoadConfig(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"weft","type":"weft-ipam","subnetFile":"/run/flannel/subnet.env","dataDir":"/var/lib/cni/weft"}`))
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"weft","type":"bridge","etcdEndpoints":["http://10.4.7.12:2379"],"ipam":{"type":"weft-ipam","publicIP":"10.4.7.21","publicIPCIDR":"10.4.7.0/24"}}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"weft","type":"weft-ipam","prevResult":{"cniVersion":"1.1.0","ips":[{"address":"172.7.21.2/24","gateway":"172.7.21.1"}]}}`))
	f.Add([]byte(`{"cniVersion":"0.3.1","name":"weft","type":"weft-ipam","prevResult":{"ips":[{"version":"4","address":"172.7.21.2/24"}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, conf, err := LoadConfig(data)
		if err != nil {
			return
		}
		if !filepath.IsAbs(cfg.DataDir) || !filepath.IsAbs(cfg.SubnetFile) {
			t.Fatalf("accepted relative paths: %+v", cfg)
		}
		if cfg.Network == "" || strings.ContainsAny(cfg.Network, "/\x00") || cfg.Network == "." || cfg.Network == ".." {
			t.Fatalf("accepted unsafe network name %q", cfg.Network)
		}
		prev, err := PrevResult(conf)
		if err == nil && prev != nil {
			IPv4s(prev)
		}
	})
}
