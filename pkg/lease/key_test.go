package lease

import (
	"errors"
	"net/netip"
	"testing"
)

func TestSubnetKey(t *testing.T) {
	tests := []struct {
		prefix string
		subnet string
		want   string
	}{
		{"", "172.7.21.0/24", "/coreos.com/network/subnets/172.7.21.0-24"},
		{"/coreos.com/network/", "172.7.21.0/24", "/coreos.com/network/subnets/172.7.21.0-24"},
		{"/weft", "10.0.0.0/8", "/weft/subnets/10.0.0.0-8"},
	}
	for _, tt := range tests {
		if got := SubnetKey(tt.prefix, netip.MustParsePrefix(tt.subnet)); got != tt.want {
			t.Errorf("SubnetKey(%q, %s) = %q, want %q", tt.prefix, tt.subnet, got, tt.want)
		}
	}
}

func TestParseSubnetKey(t *testing.T) {
	tests := []struct {
		key  string
		want string // "" means an error
	}{
		{"172.7.21.0-24", "172.7.21.0/24"},
		{"/coreos.com/network/subnets/172.7.21.0-24", "172.7.21.0/24"},
		{"/coreos.com/network/subnets/10.5.72.0-24&fc00::-64", "10.5.72.0/24"},
		{"0.0.0.0-0", "0.0.0.0/0"},
		{"172.7.21.1-24", ""},  // host bits
		{"172.7.21.0-33", ""},  // length
		{"172.7.21.0-024", ""}, // not canonical
		{"172.7.21.0-+24", ""}, // not canonical
		{"172.7.021.0-24", ""}, // leading zero
		{"172.7.21.0/24", ""},  // CIDR notation
		{"fc00::-64", ""},      // IPv6 only
		{"::ffff:1.2.3.0-24", ""},
		{"172.7.21.0-", ""},
		{"", ""},
		{"/coreos.com/network/subnets/", ""},
	}
	for _, tt := range tests {
		got, err := ParseSubnetKey(tt.key)
		if tt.want == "" {
			if err == nil || !errors.Is(err, ErrBadSubnetKey) {
				t.Errorf("ParseSubnetKey(%q) = %v, %v; want ErrBadSubnetKey", tt.key, got, err)
			}
			continue
		}
		if err != nil || got != netip.MustParsePrefix(tt.want) {
			t.Errorf("ParseSubnetKey(%q) = %v, %v; want %s", tt.key, got, err, tt.want)
		}
	}
}
