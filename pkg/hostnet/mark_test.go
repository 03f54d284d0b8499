package hostnet

import (
	"net/netip"
	"testing"
	"time"
)

func TestMarkRoundTrip(t *testing.T) {
	lease := netip.MustParsePrefix("172.7.21.0/24")
	for _, m := range []mark{
		{lease: lease, synced: time.Unix(1732470000, 0)},
		{lease: lease, synced: time.Unix(1732470000, 0), retry: time.Unix(1732470015, 0)},
	} {
		got, ok := parseAlias(m.String())
		if !ok || got != m {
			t.Errorf("parseAlias(%q) = %+v, %v; want %+v", m.String(), got, ok, m)
		}
	}
	for _, bad := range []string{"", "weft lease", "weft lease 172.7.21.0/24", "weft lease 172.7.21.0/24 synced x",
		"weft lease 172.7.21.0/24 synced 1 retry", "weft lease 172.7.21.0/24 synced 1 later 2", "weft lease nope synced 1",
		"flannel lease 172.7.21.0/24 synced 1", "weft lease 172.7.21.0/24 synced 1 retry 2 x"} {
		if m, ok := parseAlias(bad); ok {
			t.Errorf("parseAlias(%q) = %+v, want refused", bad, m)
		}
	}
}

func TestMarkTrusted(t *testing.T) {
	lease := netip.MustParsePrefix("172.7.21.0/24")
	now := time.Unix(1732470000, 0)
	minute := time.Minute
	for _, tc := range []struct {
		name   string
		m      mark
		maxAge time.Duration
		want   bool
	}{
		{"fresh sync", mark{lease: lease, synced: now.Add(-time.Second)}, minute, true},
		{"sync due", mark{lease: lease, synced: now.Add(-2 * minute)}, minute, false},
		{"every ADD syncs", mark{lease: lease, synced: now}, 0, false},
		{"other lease", mark{lease: netip.MustParsePrefix("172.7.22.0/24"), synced: now}, minute, false},
		{"from the future", mark{lease: lease, synced: now.Add(time.Hour)}, minute, false},
		{"degraded, retry not due", mark{lease: lease, synced: now.Add(-time.Hour), retry: now.Add(5 * time.Second)}, 0, true},
		{"degraded, retry due", mark{lease: lease, synced: now.Add(-time.Hour), retry: now}, minute, false},
		{"retry beyond the back-off (clock set back)", mark{lease: lease, synced: now.Add(-time.Hour), retry: now.Add(time.Hour)}, minute, false},
	} {
		if got := tc.m.trusted(lease, tc.maxAge, now); got != tc.want {
			t.Errorf("%s: trusted = %v, want %v", tc.name, got, tc.want)
		}
	}
}
