package podnet

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/weft-cni/weft/pkg/ipam"
)

func TestMarkRoundTrip(t *testing.T) {
	addr := netip.MustParseAddr("172.7.21.2")
	for _, m := range []podMark{
		{owner: ipam.Attachment{ContainerID: "4f8c2b0e9d1a", IfName: "eth0"}, addr: addr, bridge: "weft0", hairpin: true},
		{owner: ipam.Attachment{ContainerID: "4f8c2b0e9d1a", IfName: "net1"}, addr: netip.IPv4Unspecified(), bridge: "cni-weft-b", hairpin: false},
	} {
		got, ok := parseMark(m.render())
		if !ok || got != m {
			t.Errorf("parseMark(%q) = %+v %v, want %+v", m.render(), got, ok, m)
		}
	}
	long := podMark{owner: ipam.Attachment{ContainerID: strings.Repeat("a", 240), IfName: "eth0"}, addr: addr, bridge: "weft0"}
	if m := long.render(); m != "" {
		t.Errorf("a mark longer than the kernel keeps: %q", m)
	}
	for _, bad := range []string{"", "weft lease 172.7.21.0/24 synced 1", "weft pod 172.7.21.2 c1", "weft pod nope c1 eth0",
		"weft pod fd00::1 c1 eth0", "weft pod 172.7.21.2 .. eth0", "weft pod 172.7.21.2 c1 eth0 extra", "weft pod 172.7.21.2 c1  eth0",
		"weft pod 172.7.21.2 c1 eth0 weft0", "weft pod 172.7.21.2 c1 eth0 weft0 on", "weft pod 172.7.21.2 c1 eth0  hairpin",
		"weft pod 172.7.21.2 c1 eth0 a-bridge-name-too-long hairpin", "weft pod 172.7.21.2 c1 eth0 weft0 hairpin x"} {
		if m, ok := parseMark(bad); ok {
			t.Errorf("parseMark(%q) = %+v, want refused", bad, m)
		}
	}
}

// TestMarkable: an attachment is refused when its worst-case mark (the
// longest address, hairpin off) would not fit in the alias, and accepted
// with a runtime's 64-character container ID.
func TestMarkable(t *testing.T) {
	for _, tc := range []struct {
		id     string
		bridge string
		ok     bool
	}{
		{strings.Repeat("f", 64), "weft0", true},
		{strings.Repeat("f", 188), "cni-weft-bridge", true},
		{strings.Repeat("f", 189), "cni-weft-bridge", false},
		{strings.Repeat("f", 250), "weft0", false},
	} {
		owner := ipam.Attachment{ContainerID: tc.id, IfName: "eth0123456789ab"}
		err := Markable(owner, tc.bridge)
		if (err == nil) != tc.ok {
			t.Errorf("Markable(%d-byte ID, %q) = %v, want ok %t", len(tc.id), tc.bridge, err, tc.ok)
		}
		m := podMark{owner: owner, addr: netip.MustParseAddr("255.255.255.255"), bridge: tc.bridge}
		if tc.ok && m.render() == "" {
			t.Errorf("Markable accepted a %d-byte ID whose mark does not fit", len(tc.id))
		}
	}
}

// TestOldMarks: a veth marked before marks named the bridge and hairpin
// (three fields) belongs to every bridge and had hairpin on, the default
// then; a new mark belongs to its bridge only.
func TestOldMarks(t *testing.T) {
	old, ok := parseMark("weft pod 172.7.21.2 4f8c2b0e9d1a eth0")
	if !ok || !old.hairpin || !old.on("weft0") || !old.on("cni0") {
		t.Errorf("three-field mark read as %+v %v; want any bridge, hairpin on", old, ok)
	}
	m, ok := parseMark("weft pod 172.7.21.2 4f8c2b0e9d1a eth0 weft0 nohairpin")
	if !ok || m.hairpin || !m.on("weft0") || m.on("cni0") {
		t.Errorf("mark read as %+v %v; want bridge weft0 only, hairpin off", m, ok)
	}
}

// FuzzParseMark: a veth alias is anyone's to write; an accepted mark names
// a valid attachment, an IPv4 address and a bridge name the kernel could
// have (or none, in the three-field form), and renders to a mark that reads
// back the same.
func FuzzParseMark(f *testing.F) {
	f.Add("weft pod 172.7.21.2 4f8c2b0e9d1a eth0")
	f.Add("weft pod 172.7.21.254 cnitool-0123456789abcdef0123 net1")
	f.Add("weft pod 0.0.0.0 a b")
	f.Add("weft pod 172.7.21.2 4f8c2b0e9d1a eth0 weft0 hairpin")
	f.Add("weft pod 172.7.21.3 c1 net1 cni-weft nohairpin")
	f.Fuzz(func(t *testing.T, s string) {
		m, ok := parseMark(s)
		if !ok {
			return
		}
		if !m.addr.Is4() || ipam.ValidateName("container ID", m.owner.ContainerID) != nil ||
			ipam.ValidateName("interface name", m.owner.IfName) != nil || len(m.bridge) > 15 {
			t.Fatalf("accepted %q as %+v", s, m)
		}
		if m.bridge == "" {
			return // the three-field form is read, never written
		}
		if again := m.render(); again != "" && again != s {
			// Only the canonical form of the address may differ.
			if back, ok := parseMark(again); !ok || back != m {
				t.Fatalf("%q renders as %q, which reads back differently", s, again)
			}
		}
	})
}
