package main

import (
	"strings"
	"testing"
	"time"
)

func TestLoadConfDefaults(t *testing.T) {
	conf, err := loadConf([]byte(`{"cniVersion":"1.1.0","name":"weft","type":"weft","etcdEndpoints":["http://10.4.7.12:2379"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Bridge != "weft0" || conf.IPAM.Type != "weft-ipam" || conf.SubnetFile != "/run/weft/subnet.env" ||
		!conf.Masquerade() || conf.peerSync() != time.Minute || conf.HairpinMode {
		t.Fatalf("defaults not applied: %+v", conf)
	}
}

func TestLoadConfFields(t *testing.T) {
	conf, err := loadConf([]byte(`{"cniVersion":"1.1.0","name":"weft","type":"weft","bridge":"br9","mtu":1400,
		"ipMasq":false,"hairpinMode":true,"peerSyncInterval":0,"publicIP":"10.4.7.21","iface":"eth1",
		"subnetFile":"/run/x/subnet.env","etcdPrefix":"/x","ipam":{"type":"host-local"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Bridge != "br9" || conf.MTU != 1400 || conf.Masquerade() || !conf.HairpinMode || conf.peerSync() != 0 ||
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
	})
}
