package daemon

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParseFlags: `weft daemon` reads flags and WEFT_* variables that an
// operator (or a templating mistake) wrote. args is split on newlines, env
// is "NAME=value" lines. An accepted config must be one the daemon can run.
func FuzzParseFlags(f *testing.F) {
	f.Add("--etcd-endpoints=http://10.4.7.12:2379\n--iface=eth0\n--subnet-file=/run/flannel/subnet.env\n--healthz-port=2401", "")
	f.Add("--public-ip=10.4.7.21\n--public-ip-cidr=10.4.7.0/24\n--ip-masq", "WEFT_ETCD_ENDPOINTS=https://a:2379,https://b:2379\nWEFT_IPTABLES_RESYNC=5")
	f.Add("--subnet-file=./subnet.env", "WEFT_ETCD_ENDPOINTS=http://127.0.0.1:2379\nWEFT_SUBNET_LEASE_RENEW_MARGIN=60\nWEFT_LOG_FORMAT=json")
	f.Fuzz(func(t *testing.T, args, env string) {
		vars := map[string]string{}
		for line := range strings.Lines(env) {
			if k, v, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "="); ok {
				vars[k] = v
			}
		}
		getenv := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
		var argv []string
		if args != "" {
			argv = strings.Split(args, "\n")
		}
		c, err := ParseFlags("weft daemon", argv, getenv)
		if err != nil {
			return
		}
		switch {
		case len(c.EtcdEndpoints) == 0:
			t.Fatal("accepted no etcd endpoints")
		case !filepath.IsAbs(c.SubnetFile):
			t.Fatalf("accepted relative subnet file %q", c.SubnetFile)
		case c.HealthzPort < 0 || c.HealthzPort > 65535:
			t.Fatalf("accepted healthz port %d", c.HealthzPort)
		case c.IPTablesResync < time.Second || c.RouteResync < time.Second:
			t.Fatalf("accepted resync periods %s, %s", c.IPTablesResync, c.RouteResync)
		case c.RenewMargin <= 0 || c.RenewMargin >= c.LeaseTTL:
			t.Fatalf("accepted renew margin %s with a TTL of %s", c.RenewMargin, c.LeaseTTL)
		case !validIfName(c.Bridge):
			t.Fatalf("accepted bridge %q", c.Bridge)
		}
	})
}
