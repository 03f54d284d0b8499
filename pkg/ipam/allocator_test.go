package ipam

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

func addrSet(ips ...string) map[netip.Addr]struct{} {
	set := make(map[netip.Addr]struct{}, len(ips))
	for _, s := range ips {
		set[netip.MustParseAddr(s)] = struct{}{}
	}
	return set
}

// hosts returns prefix.host for each host number, e.g. hosts("172.7.21", 2, 3).
func hosts(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, prefix+"."+strconv.Itoa(i))
	}
	return out
}

func TestAllocatorNext(t *testing.T) {
	tests := []struct {
		name    string
		subnet  string
		inUse   []string
		last    string
		want    string
		wantErr string // substring; wraps ErrExhausted
	}{
		{name: "/24 empty", subnet: "172.7.21.0/24", want: "172.7.21.2"},
		{name: "/24 after last", subnet: "172.7.21.0/24", last: "172.7.21.2", inUse: []string{"172.7.21.2"}, want: "172.7.21.3"},
		{name: "/24 released not reused", subnet: "172.7.21.0/24", last: "172.7.21.7", want: "172.7.21.8"},
		{name: "/24 skips in use", subnet: "172.7.21.0/24", last: "172.7.21.100",
			inUse: []string{"172.7.21.101", "172.7.21.102"}, want: "172.7.21.103"},
		{name: "/24 last usable before broadcast", subnet: "172.7.21.0/24", last: "172.7.21.253", want: "172.7.21.254"},
		{name: "/24 wraps, skipping broadcast, network and gateway", subnet: "172.7.21.0/24", last: "172.7.21.254",
			want: "172.7.21.2"},
		{name: "/24 wraps past in use", subnet: "172.7.21.0/24", last: "172.7.21.254",
			inUse: []string{"172.7.21.254", "172.7.21.2", "172.7.21.3"}, want: "172.7.21.4"},
		{name: "/24 last outside subnet", subnet: "172.7.21.0/24", last: "172.7.22.9", want: "172.7.21.2"},
		{name: "/24 last is gateway", subnet: "172.7.21.0/24", last: "172.7.21.1", want: "172.7.21.2"},
		{name: "/24 last is broadcast", subnet: "172.7.21.0/24", last: "172.7.21.255", want: "172.7.21.2"},
		{name: "unmasked subnet", subnet: "172.7.21.1/24", want: "172.7.21.2"},
		{name: "/30 one address", subnet: "10.0.0.4/30", want: "10.0.0.6"},
		{name: "/30 ignores in use elsewhere", subnet: "10.0.0.4/30", inUse: []string{"10.0.0.2", "10.0.0.10", "fd00::6"},
			want: "10.0.0.6"},
		{name: "/30 exhausted", subnet: "10.0.0.4/30", inUse: []string{"10.0.0.6"},
			wantErr: "no free address in 10.0.0.4/30: 1 of 1 in use"},
		{name: "/28 exhausted", subnet: "172.7.21.0/28", inUse: hosts("172.7.21", 2, 14),
			wantErr: "no free address in 172.7.21.0/28: 13 of 13 in use"},
		{name: "/28 exhausted, network gateway broadcast held elsewhere", subnet: "172.7.21.0/28",
			inUse:   append(hosts("172.7.21", 0, 15), "172.7.22.3"),
			wantErr: "no free address in 172.7.21.0/28: 13 of 13 in use"},
		{name: "/28 last free found by wrapping", subnet: "172.7.21.0/28", last: "172.7.21.10",
			inUse: append(hosts("172.7.21", 2, 8), hosts("172.7.21", 10, 14)...), want: "172.7.21.9"},
		{name: "ipv6", subnet: "fd00:7:21::/64", last: "fd00:7:21::ff", want: "fd00:7:21::100"},
		{name: "ipv6 wraps before top address", subnet: "fd00::/120", last: "fd00::fe", want: "fd00::2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := newAllocator(netip.MustParsePrefix(tt.subnet))
			if err != nil {
				t.Fatalf("newAllocator: %v", err)
			}
			var last netip.Addr
			if tt.last != "" {
				last = netip.MustParseAddr(tt.last)
			}
			got, err := a.next(addrSet(tt.inUse...), last)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("next = %v, %v; want error %q wrapping ErrExhausted", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != netip.MustParseAddr(tt.want) {
				t.Fatalf("next = %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

// TestAllocatorFillsRange hands out a whole /29 and checks exactly the
// usable addresses came out, in order.
func TestAllocatorFillsRange(t *testing.T) {
	a, err := newAllocator(netip.MustParsePrefix("192.168.9.8/29"))
	if err != nil {
		t.Fatal(err)
	}
	inUse := map[netip.Addr]struct{}{}
	var last netip.Addr
	var got []string
	for {
		ip, err := a.next(inUse, last)
		if errors.Is(err, ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		inUse[ip], last = struct{}{}, ip
		got = append(got, ip.String())
	}
	want := "192.168.9.10 192.168.9.11 192.168.9.12 192.168.9.13 192.168.9.14"
	if strings.Join(got, " ") != want {
		t.Fatalf("handed out %v, want %s", got, want)
	}
}

func TestNewAllocatorRejects(t *testing.T) {
	tests := []struct {
		name      string
		subnet    netip.Prefix
		exhausted bool
	}{
		{"zero prefix", netip.Prefix{}, false},
		{"ipv4-mapped", netip.MustParsePrefix("::ffff:10.0.0.0/120"), false},
		{"/31", netip.MustParsePrefix("10.0.0.0/31"), true},
		{"/32", netip.MustParsePrefix("10.0.0.1/32"), true},
		{"/128", netip.MustParsePrefix("fd00::1/128"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newAllocator(tt.subnet)
			if err == nil || errors.Is(err, ErrExhausted) != tt.exhausted {
				t.Fatalf("newAllocator(%v) = %v, want error (exhausted %v)", tt.subnet, err, tt.exhausted)
			}
		})
	}
}

func TestAllocatorSize(t *testing.T) {
	for subnet, want := range map[string]uint64{
		"10.0.0.0/30": 1, "10.0.0.0/28": 13, "10.0.0.0/24": 253, "10.0.0.0/16": 65533,
		"fd00::/64": 1<<64 - 1, "fd00::/48": 1<<64 - 1,
	} {
		a, err := newAllocator(netip.MustParsePrefix(subnet))
		if err != nil || a.size != want {
			t.Errorf("%s: size %d, %v; want %d", subnet, a.size, err, want)
		}
	}
}

func TestGateway(t *testing.T) {
	for in, want := range map[string]string{
		"172.7.21.0/24": "172.7.21.1", "172.7.21.1/24": "172.7.21.1", "172.7.21.77/28": "172.7.21.65",
		"fd00:7::/64": "fd00:7::1",
	} {
		if got := NewPool(nil, netip.MustParsePrefix(in)).Gateway(); got != netip.MustParseAddr(want) {
			t.Errorf("Gateway of %s = %s, want %s", in, got, want)
		}
	}
	if got := NewPool(nil, netip.Prefix{}).Gateway(); got.IsValid() {
		t.Errorf("Gateway of zero prefix = %s, want invalid", got)
	}
}
