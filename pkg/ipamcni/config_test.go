package ipamcni

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weft-cni/weft/pkg/ipam"
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

// TestGCKeepsWired: GC frees what the valid list lacks, except attachments
// whose veth still exists; it reports those it kept, and only those the
// store holds.
func TestGCKeepsWired(t *testing.T) {
	dir := t.TempDir()
	store, err := ipam.OpenDiskStore(dir, "weft")
	if err != nil {
		t.Fatal(err)
	}
	pool := ipam.NewPool(store, netip.MustParsePrefix("172.7.21.0/24"))
	listed, wiredPod, gone := ipam.Attachment{ContainerID: "listed", IfName: "eth0"}, ipam.Attachment{ContainerID: "wired", IfName: "eth0"}, ipam.Attachment{ContainerID: "gone", IfName: "eth0"}
	addrs := map[ipam.Attachment]netip.Addr{}
	for _, a := range []ipam.Attachment{listed, wiredPod, gone} {
		ip, err := pool.Allocate(context.Background(), a)
		if err != nil {
			t.Fatal(err)
		}
		addrs[a] = ip
	}
	store.Close()
	notHeld := ipam.Attachment{ContainerID: "elsewhere", IfName: "eth0"}
	c := &Config{Network: "weft", DataDir: dir, Live: func() (map[ipam.Attachment]netip.Addr, error) {
		return map[ipam.Attachment]netip.Addr{wiredPod: addrs[wiredPod], notHeld: netip.MustParseAddr("172.7.21.99")}, nil
	}}
	freed, wired, err := c.GC(context.Background(), []types.GCAttachment{{ContainerID: "listed", IfName: "eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(freed) != 1 || freed[0] != addrs[gone] {
		t.Errorf("freed %v, want only %s of the attachment that is gone", freed, addrs[gone])
	}
	if len(wired) != 1 || wired[0] != wiredPod {
		t.Errorf("reported kept %v, want only %v (held and wired)", wired, wiredPod)
	}
}
