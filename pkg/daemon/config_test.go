package daemon

import (
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// seedArgs is the seed's flanneld command line, flanneld replaced by
// `weft daemon` (relative paths as in its supervisor program).
var seedArgs = []string{
	"--public-ip=10.4.7.21",
	"--etcd-endpoints=https://10.4.7.12:2379,https://10.4.7.21:2379,https://10.4.7.22:2379",
	"--etcd-keyfile=./cert/client-key.pem",
	"--etcd-certfile=./cert/client.pem",
	"--etcd-cafile=./cert/ca.pem",
	"--iface=eth0",
	"--subnet-file=./subnet.env",
	"--healthz-port=2401",
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseFlagsSeed(t *testing.T) {
	cfg, err := ParseFlags("weft daemon", seedArgs, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if !slices.Equal(cfg.EtcdEndpoints, []string{"https://10.4.7.12:2379", "https://10.4.7.21:2379", "https://10.4.7.22:2379"}) {
		t.Errorf("endpoints = %q", cfg.EtcdEndpoints)
	}
	if cfg.PublicIP != ip("10.4.7.21") || !slices.Equal(cfg.Ifaces, []string{"eth0"}) {
		t.Errorf("public ip %v, ifaces %q", cfg.PublicIP, cfg.Ifaces)
	}
	if cfg.SubnetFile != filepath.Join(wd, "subnet.env") {
		t.Errorf("subnet file = %q, want it made absolute", cfg.SubnetFile)
	}
	if cfg.EtcdCAFile != "./cert/ca.pem" || cfg.EtcdCertFile != "./cert/client.pem" || cfg.EtcdKeyFile != "./cert/client-key.pem" {
		t.Errorf("TLS files = %q %q %q", cfg.EtcdCAFile, cfg.EtcdCertFile, cfg.EtcdKeyFile)
	}
	if cfg.HealthzAddr() != "0.0.0.0:2401" {
		t.Errorf("healthz addr = %q", cfg.HealthzAddr())
	}
	if cfg.EtcdPrefix != "/coreos.com/network" || !cfg.IPMasq || cfg.Bridge != "weft0" ||
		cfg.IPTablesResync != 5*time.Second || cfg.RenewMargin != time.Hour || cfg.LeaseTTL != 24*time.Hour {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestParseFlagsDefaults(t *testing.T) {
	cfg, err := ParseFlags("weft daemon", nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.EtcdEndpoints, []string{"http://127.0.0.1:4001", "http://127.0.0.1:2379"}) ||
		cfg.SubnetFile != "/run/weft/subnet.env" || cfg.HealthzPort != 0 || cfg.PublicIP.IsValid() ||
		len(cfg.Ifaces) != 0 || cfg.LogFormat != "text" || cfg.LogLevel != slog.LevelInfo {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestParseFlagsEnv(t *testing.T) {
	e := env(map[string]string{
		"WEFT_ETCD_ENDPOINTS":            "http://10.4.7.12:2379",
		"WEFT_PUBLIC_IP":                 "10.4.7.22",
		"WEFT_IFACE":                     "eth1,eth0",
		"WEFT_IP_MASQ":                   "false",
		"WEFT_IPTABLES_RESYNC":           "9",
		"WEFT_SUBNET_LEASE_RENEW_MARGIN": "30",
		"WEFT_LOG_FORMAT":                "json",
		"WEFT_HEALTHZ_PORT":              "2401",
	})
	cfg, err := ParseFlags("weft daemon", []string{"--healthz-port=2402", "--iface=eth9"}, e)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EtcdEndpoints[0] != "http://10.4.7.12:2379" || cfg.PublicIP != ip("10.4.7.22") || cfg.IPMasq ||
		cfg.IPTablesResync != 9*time.Second || cfg.RenewMargin != 30*time.Minute || cfg.LogFormat != "json" {
		t.Errorf("from environment: %+v", cfg)
	}
	if cfg.HealthzPort != 2402 || !slices.Equal(cfg.Ifaces, []string{"eth9"}) {
		t.Errorf("command line must win over the environment: port %d, ifaces %q", cfg.HealthzPort, cfg.Ifaces)
	}
}

func TestParseFlagsRepeatedIface(t *testing.T) {
	cfg, err := ParseFlags("weft daemon", []string{"--iface=eth1", "-iface", "10.4.7.21", "--iface=eth2,eth3"}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Ifaces, []string{"eth1", "10.4.7.21", "eth2", "eth3"}) {
		t.Errorf("ifaces = %q", cfg.Ifaces)
	}
	n := cfg.Node("10.4.7.21")
	if n.PublicIP != "10.4.7.21" || n.Iface != "" {
		t.Errorf("--iface=IP gives node config %+v", n)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"--public-ip=10.4.7"}, want: "--public-ip"},
		{args: []string{"--public-ip=fe80::1"}, want: "--public-ip"},
		{args: []string{"--iface=a/b"}, want: "--iface"},
		{args: []string{"--iface=fd00::21"}, want: "--iface \"fd00::21\" is an IPv6 address"},
		{args: []string{"--etcd-endpoints=,"}, want: "--etcd-endpoints"},
		{args: []string{"--healthz-port=70000"}, want: "--healthz-port"},
		{args: []string{"--healthz-ip=localhost"}, want: "--healthz-ip"},
		{args: []string{"--iptables-resync=0"}, want: "--iptables-resync"},
		{args: []string{"--subnet-lease-renew-margin=1440"}, want: "--subnet-lease-renew-margin"},
		{args: []string{"--subnet-lease-renew-margin=0"}, want: "--subnet-lease-renew-margin"},
		{args: []string{"--subnet-lease-ttl=1500ms"}, want: "--subnet-lease-ttl"},
		{args: []string{"--log-format=xml"}, want: "--log-format"},
		{args: []string{"--log-level=loud"}, want: "--log-level"},
		{args: []string{"--bridge=br/0"}, want: "--bridge"},
		{args: []string{"--subnet-file="}, want: "--subnet-file"},
		{args: []string{"--ipam-data-dir=var/lib/cni/weft"}, want: "--ipam-data-dir"},
		{args: []string{"--cni-network=../weft"}, want: "--cni-network"},
		{args: []string{"--no-such-flag"}, want: "no-such-flag"},
		{args: []string{"extra"}, want: "unexpected argument"},
		{env: map[string]string{"WEFT_HEALTHZ_PORT": "many"}, want: "WEFT_HEALTHZ_PORT"},
	}
	for _, tt := range tests {
		_, err := ParseFlags("weft daemon", tt.args, env(tt.env))
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseFlags(%q, %v) = %v, want an ErrConfig naming %q", tt.args, tt.env, err, tt.want)
		}
	}
	if _, err := ParseFlags("weft daemon", []string{"-h"}, noEnv); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h gives %v", err)
	}
}

func TestParseFlagsShortTTL(t *testing.T) {
	cfg, err := ParseFlags("weft daemon", []string{"--subnet-lease-ttl=30s"}, noEnv)
	if err != nil || cfg.RenewMargin != 10*time.Second {
		t.Errorf("margin with a 30s TTL = %v, %v; want 10s", cfg.RenewMargin, err)
	}
}

func TestParseFlagsVerbosity(t *testing.T) {
	cfg, err := ParseFlags("weft daemon", []string{"-v=2"}, noEnv)
	if err != nil || cfg.LogLevel != slog.LevelDebug {
		t.Errorf("-v=2 gives level %v, %v", cfg.LogLevel, err)
	}
}

func TestUsageNamesEnv(t *testing.T) {
	var b strings.Builder
	Usage(&b, "weft daemon")
	for _, want := range []string{"--etcd-endpoints", "WEFT_ETCD_ENDPOINTS", "--subnet-lease-renew-margin", "WEFT_IPTABLES_RESYNC"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("usage lacks %q", want)
		}
	}
}
