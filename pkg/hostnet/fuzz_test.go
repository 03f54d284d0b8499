package hostnet

import (
	"testing"
	"time"
)

// FuzzParseAlias: the bridge's alias is read on every ADD and anything may
// have written it. An accepted mark must survive a round trip, so the
// plugin and the daemon read back what they wrote.
func FuzzParseAlias(f *testing.F) {
	f.Add("weft lease 172.7.21.0/24 synced 1732470000")
	f.Add("weft lease 172.7.21.0/24 synced 1732470000 retry 1732470015")
	f.Add("weft lease 172.7.21.0/24 synced -1")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		m, ok := parseAlias(s)
		if !ok {
			return
		}
		again, ok := parseAlias(m.String())
		if !ok || again.lease != m.lease || !again.synced.Equal(m.synced) || !again.retry.Equal(m.retry) {
			t.Fatalf("%q parsed to %+v, which renders as %q and reads back as %+v, %v", s, m, m.String(), again, ok)
		}
		m.trusted(m.lease, time.Minute, time.Unix(1732470000, 0))
	})
}
