package podnet

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/weft-cni/weft/pkg/ipam"
)

func TestMarkRoundTrip(t *testing.T) {
	a := ipam.Attachment{ContainerID: "4f8c2b0e9d1a", IfName: "eth0"}
	addr := netip.MustParseAddr("172.7.21.2")
	got, gotAddr, ok := parseMark(mark(a, addr))
	if !ok || got != a || gotAddr != addr {
		t.Fatalf("parseMark(%q) = %+v %s %v", mark(a, addr), got, gotAddr, ok)
	}
	if m := mark(ipam.Attachment{ContainerID: strings.Repeat("a", 250), IfName: "eth0"}, addr); m != "" {
		t.Errorf("a mark longer than the kernel keeps: %q", m)
	}
	for _, bad := range []string{"", "weft lease 172.7.21.0/24 synced 1", "weft pod 172.7.21.2 c1", "weft pod nope c1 eth0",
		"weft pod fd00::1 c1 eth0", "weft pod 172.7.21.2 .. eth0", "weft pod 172.7.21.2 c1 eth0 extra", "weft pod 172.7.21.2 c1  eth0"} {
		if a, addr, ok := parseMark(bad); ok {
			t.Errorf("parseMark(%q) = %+v %s, want refused", bad, a, addr)
		}
	}
}

// FuzzParseMark: a veth alias is anyone's to write; an accepted mark names
// a valid attachment and an IPv4 address, and renders back to itself.
func FuzzParseMark(f *testing.F) {
	f.Add("weft pod 172.7.21.2 4f8c2b0e9d1a eth0")
	f.Add("weft pod 172.7.21.254 cnitool-0123456789abcdef0123 net1")
	f.Add("weft pod 0.0.0.0 a b")
	f.Fuzz(func(t *testing.T, s string) {
		a, addr, ok := parseMark(s)
		if !ok {
			return
		}
		if !addr.Is4() || ipam.ValidateName("container ID", a.ContainerID) != nil || ipam.ValidateName("interface name", a.IfName) != nil {
			t.Fatalf("accepted %q as %+v %s", s, a, addr)
		}
		if again := mark(a, addr); again != "" && again != s {
			// Only the canonical form of the address may differ.
			if b, addr2, ok := parseMark(again); !ok || b != a || addr2 != addr {
				t.Fatalf("%q renders as %q, which reads back differently", s, again)
			}
		}
	})
}
