package ipamcni

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weft-cni/weft/pkg/nodelease"
)

// weft-ipam's fields fall back to the top level, so one netconf serves both
// weft and the reference bridge plugin.
func TestLoadConfigFallbacks(t *testing.T) {
	cfg, _, err := LoadConfig([]byte(`{"cniVersion":"1.1.0","name":"pods","type":"bridge",
		"etcdEndpoints":["http://top:2379"],"subnetFile":"/run/top.env","dataDir":"/var/lib/top",
		"ipam":{"type":"weft-ipam","etcdEndpoints":["http://ipam:2379"],"publicIP":"10.4.7.21"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EtcdEndpoints[0] != "http://ipam:2379" || cfg.SubnetFile != "/run/top.env" || cfg.DataDir != "/var/lib/top" ||
		cfg.PublicIP != "10.4.7.21" || cfg.Network != "pods" {
		t.Fatalf("fallbacks wrong: %+v", cfg)
	}
	cfg, _, err = LoadConfig([]byte(`{"cniVersion":"1.1.0","name":"pods","type":"weft"}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != DefaultDataDir || cfg.SubnetFile != "/run/weft/subnet.env" {
		t.Fatalf("defaults wrong: %+v", cfg)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		conf string
		code uint
	}{
		"truncated":           {`{"name":`, types.ErrDecodingFailure},
		"relative dataDir":    {`{"name":"pods","ipam":{"dataDir":"rel"}}`, 0},
		"network name ../":    {`{"name":"../etc","ipam":{}}`, 0},
		"bad publicIP":        {`{"name":"pods","ipam":{"publicIP":"nope"}}`, 0},
		"relative subnetFile": {`{"name":"pods","subnetFile":"x.env"}`, 0},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := LoadConfig([]byte(tc.conf))
			var cniErr *types.Error
			switch {
			case err == nil:
				t.Fatal("accepted")
			case tc.code != 0 && (!errors.As(err, &cniErr) || cniErr.Code != tc.code):
				t.Fatalf("err %v, want CNI code %d", err, tc.code)
			case tc.code == 0 && !errors.Is(err, nodelease.ErrConfig):
				t.Fatalf("err %v, want ErrConfig", err)
			}
		})
	}
}
