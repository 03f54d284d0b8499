package netconf

import (
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseDefaults(t *testing.T) {
	tests := []struct {
		name      string
		json      string
		subnetLen int
		min, max  string
		count     int
		backend   Backend
	}{
		{"seed", `{"Network": "172.7.0.0/16", "Backend": {"Type": "host-gw"}}`, 24, "172.7.1.0", "172.7.255.0", 255, Backend{Type: "host-gw"}},
		{"no backend is host-gw", `{"Network": "172.7.0.0/16"}`, 24, "172.7.1.0", "172.7.255.0", 255, Backend{Type: "host-gw", Defaulted: true}},
		{"narrow network gets prefix+2", `{"Network": "10.0.0.0/24"}`, 26, "10.0.0.64", "10.0.0.192", 3, Backend{Type: "host-gw", Defaulted: true}},
		{"/22 gets /24", `{"Network": "10.0.0.0/22"}`, 24, "10.0.1.0", "10.0.3.0", 3, Backend{Type: "host-gw", Defaulted: true}},
		{"host bits masked", `{"Network": "172.7.9.9/16", "SubnetLen": 28}`, 28, "172.7.0.16", "172.7.255.240", 4095, Backend{Type: "host-gw", Defaulted: true}},
		{"explicit bounds", `{"Network": "172.7.0.0/16", "SubnetMin": "172.7.21.0", "SubnetMax": "172.7.23.0"}`, 24, "172.7.21.0", "172.7.23.0", 3, Backend{Type: "host-gw", Defaulted: true}},
		{"vxlan defaults", `{"Network": "172.7.0.0/16", "Backend": {"Type": "vxlan"}}`, 24, "172.7.1.0", "172.7.255.0", 255, Backend{Type: "vxlan", VNI: 1, Port: 8472}},
		{"IPv6 fields with EnableIPv6 off", `{"Network": "172.7.0.0/16", "EnableIPv4": true, "EnableIPv6": false, "IPv6Network": "fc00::/48"}`, 24, "172.7.1.0", "172.7.255.0", 255, Backend{Type: "host-gw", Defaulted: true}},
		{"IPv6Network alone", `{"Network": "172.7.0.0/16", "IPv6Network": "fc00::/48", "IPv6SubnetLen": 64}`, 24, "172.7.1.0", "172.7.255.0", 255, Backend{Type: "host-gw", Defaulted: true}},
		{"vxlan largest VNI", `{"Network": "172.7.0.0/16", "Backend": {"Type": "vxlan", "VNI": 16777215}}`, 24, "172.7.1.0", "172.7.255.0", 255, Backend{Type: "vxlan", VNI: 16777215, Port: 8472}},
		{"vxlan explicit", `{"Network": "172.7.0.0/16", "Backend": {"Type": "VXLAN", "VNI": 4, "Port": 4789, "MTU": 1400, "DirectRouting": true}}`, 24, "172.7.1.0", "172.7.255.0", 255, Backend{Type: "vxlan", VNI: 4, Port: 4789, MTU: 1400, DirectRouting: true}},
		// flannel reads an address of 0 as no bound set (the zero value of
		// its Config, as a tool that marshals one writes it).
		{"zero bounds are the defaults", `{"Network": "172.7.0.0/16", "SubnetLen": 0, "SubnetMin": "0.0.0.0", "SubnetMax": "0.0.0.0"}`, 24, "172.7.1.0", "172.7.255.0", 255, Backend{Type: "host-gw", Defaulted: true}},
		// flanneld hands Port 0 to the kernel, which then uses its default, 8472.
		{"vxlan port 0 is the default", `{"Network": "172.7.0.0/16", "Backend": {"Type": "vxlan", "Port": 0}}`, 24, "172.7.1.0", "172.7.255.0", 255, Backend{Type: "vxlan", VNI: 1, Port: 8472}},
		// flannel nodes with GBP set the G flag on every packet; a device
		// without GBP drops them, so weft's must have it too.
		{"vxlan GBP", `{"Network": "172.7.0.0/16", "Backend": {"Type": "vxlan", "GBP": true, "Learning": true}}`, 24, "172.7.1.0", "172.7.255.0", 255, Backend{Type: "vxlan", VNI: 1, Port: 8472, GBP: true}},
		{"GBP means nothing under host-gw", `{"Network": "172.7.0.0/16", "Backend": {"Type": "host-gw", "GBP": true}}`, 24, "172.7.1.0", "172.7.255.0", 255, Backend{Type: "host-gw"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.json))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if cfg.SubnetLen != tt.subnetLen || cfg.SubnetMin.String() != tt.min || cfg.SubnetMax.String() != tt.max {
				t.Errorf("got len %d min %s max %s, want %d %s %s", cfg.SubnetLen, cfg.SubnetMin, cfg.SubnetMax, tt.subnetLen, tt.min, tt.max)
			}
			if cfg.Count() != tt.count {
				t.Errorf("Count() = %d, want %d", cfg.Count(), tt.count)
			}
			if got := len(slices.Collect(cfg.Subnets())); got != tt.count {
				t.Errorf("Subnets() yielded %d, want %d", got, tt.count)
			}
			if cfg.Backend != tt.backend {
				t.Errorf("backend %+v, want %+v", cfg.Backend, tt.backend)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, json, want string }{
		{"not json", `{`, "decoding JSON"},
		{"wrong type", `{"Network": 7}`, "decoding JSON"},
		{"missing network", `{}`, `"Network" is missing`},
		{"ipv6 network", `{"Network": "fd00::/64"}`, "not an IPv4 CIDR"},
		{"garbage network", `{"Network": "banana"}`, "not an IPv4 CIDR"},
		{"subnetlen too long", `{"Network": "10.0.0.0/8", "SubnetLen": 31}`, "at most 30"},
		{"negative subnetlen", `{"Network": "10.0.0.0/8", "SubnetLen": -1}`, "out of range"},
		{"fewer than four subnets", `{"Network": "10.0.0.0/16", "SubnetLen": 17}`, "at least four subnets"},
		{"tiny network", `{"Network": "10.0.0.0/30"}`, "too small"},
		{"min outside", `{"Network": "10.0.0.0/16", "SubnetMin": "10.1.0.0"}`, "SubnetMin 10.1.0.0 is not in the range"},
		{"max outside", `{"Network": "10.0.0.0/16", "SubnetMax": "11.0.0.0"}`, "SubnetMax 11.0.0.0 is not in the range"},
		{"min unaligned", `{"Network": "10.0.0.0/16", "SubnetMin": "10.0.1.5"}`, "SubnetMin is not on a SubnetLen boundary"},
		{"max unaligned", `{"Network": "10.0.0.0/16", "SubnetMax": "10.0.9.1"}`, "SubnetMax is not on a SubnetLen boundary"},
		{"min above max", `{"Network": "10.0.0.0/16", "SubnetMin": "10.0.9.0", "SubnetMax": "10.0.3.0"}`, "above SubnetMax"},
		{"dual-stack", `{"EnableIPv6": true, "Network": "10.0.0.0/16", "IPv6Network": "fc00::/48"}`, `"EnableIPv6": true is not supported: weft is IPv4-only`},
		{"ipv6-only", `{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fc00::/48"}`, `"EnableIPv6": true is not supported: weft is IPv4-only`},
		{"ipv4 off", `{"EnableIPv4": false, "Network": "10.0.0.0/16"}`, `"EnableIPv4": false is not supported: weft is IPv4-only`},
		{"ipv6 flag lower case", `{"enableipv6": true, "Network": "10.0.0.0/16"}`, `weft is IPv4-only`},
		{"ipv6 flag not a bool", `{"EnableIPv6": "yes", "Network": "10.0.0.0/16"}`, "decoding JSON"},
		{"udp", `{"Network": "10.0.0.0/16", "Backend": {"Type": "udp"}}`, `"udp" is not implemented by weft`},
		{"unknown backend", `{"Network": "10.0.0.0/16", "Backend": {"Type": "ipip"}}`, `"ipip" is not supported`},
		{"bad vni", `{"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan", "VNI": 16777216}}`, "VNI"},
		{"vni beyond 24 bits", `{"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan", "VNI": 16777216}}`, "Backend.VNI 16777216 out of range 0..16777215"},
		{"negative vni", `{"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan", "VNI": -1}}`, "out of range 0..16777215"},
		{"bad port", `{"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan", "Port": 65536}}`, "Port"},
		{"negative port", `{"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan", "Port": -1}}`, "Backend.Port -1 out of range"},
		{"bad mtu", `{"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan", "MTU": 100}}`, "MTU"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.json))
			if err == nil {
				t.Fatal("Parse succeeded, want error")
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to wrap ErrInvalid and contain %q", err, tt.want)
			}
		})
	}
}

func TestContains(t *testing.T) {
	cfg, err := Parse([]byte(`{"Network": "172.7.0.0/16", "SubnetMin": "172.7.21.0", "SubnetMax": "172.7.23.0"}`))
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string]bool{
		"172.7.21.0/24": true, "172.7.23.0/24": true, "172.7.20.0/24": false, "172.7.24.0/24": false,
		"172.7.21.0/25": false, "172.7.21.1/24": false, "10.0.21.0/24": false,
	} {
		if got := cfg.Contains(netip.MustParsePrefix(s)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", s, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"Network": "172.7.0.0/16", "Backend": {"Type": "host-gw"}}`))
	f.Add([]byte(`{"Network": "10.0.0.0/30", "SubnetLen": 30}`))
	f.Add([]byte(`{"EnableIPv6": true, "Network": "10.0.0.0/16", "IPv6Network": "fc00::/48"}`))
	f.Add([]byte(`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fc00::/48"}`))
	f.Add([]byte(`{"Network": "10.0.0.0/16", "Backend": {"Type": "vxlan", "VNI": 65536}}`))
	f.Add([]byte(`{"EnableIPv6": false, "Network": "10.0.0.0/16", "IPv6Network": "fc00::/48"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			return
		}
		var families struct {
			EnableIPv4 *bool
			EnableIPv6 bool
		}
		if json.Unmarshal(data, &families) != nil || families.EnableIPv6 || (families.EnableIPv4 != nil && !*families.EnableIPv4) {
			t.Fatalf("accepted a config that is not IPv4-only: %s", data)
		}
		n := 0
		for s := range cfg.Subnets() {
			if !cfg.Contains(s) || !cfg.Network.Contains(s.Addr()) {
				t.Fatalf("subnet %s from Subnets() not contained in %+v", s, cfg)
			}
			if n++; n > 3 {
				break
			}
		}
		if cfg.Backend.VNI < 0 || cfg.Backend.VNI > MaxVNI {
			t.Fatalf("accepted VNI %d, which flannel peers cannot decode from a lease", cfg.Backend.VNI)
		}
		if cfg.Count() < 1 {
			t.Fatalf("valid config with no subnets: %+v", cfg)
		}
	})
}
