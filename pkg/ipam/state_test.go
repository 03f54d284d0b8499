package ipam

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"testing"
)

const goldenState = `weft-ipam-state 1
last 172.7.21.14
ip 172.7.21.2 0123abcd eth0
ip 172.7.21.14 4567cdef eth0
ip 172.7.22.9 4567cdef net1
end 3
`

func goldenEntries() map[Attachment]netip.Addr {
	return map[Attachment]netip.Addr{
		{"0123abcd", "eth0"}: netip.MustParseAddr("172.7.21.2"),
		{"4567cdef", "eth0"}: netip.MustParseAddr("172.7.21.14"),
		{"4567cdef", "net1"}: netip.MustParseAddr("172.7.22.9"),
	}
}

func TestStateCodec(t *testing.T) {
	st := &State{Last: netip.MustParseAddr("172.7.21.14"), Entries: goldenEntries()}
	data, err := encodeState(st)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	if string(data) != goldenState {
		t.Fatalf("encoded:\n%s\nwant:\n%s", data, goldenState)
	}
	back, err := parseState(data)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if back.Last != st.Last || !maps.Equal(back.Entries, st.Entries) {
		t.Fatalf("round trip: %+v, want %+v", back, st)
	}

	empty, err := encodeState(NewState())
	if err != nil || string(empty) != "weft-ipam-state 1\nend 0\n" {
		t.Fatalf("empty state encodes as %q, %v", empty, err)
	}
	if st, err := parseState(empty); err != nil || len(st.Entries) != 0 || st.Last.IsValid() {
		t.Fatalf("empty state parses as %+v, %v", st, err)
	}
}

func TestParseStateCorrupt(t *testing.T) {
	const h = "weft-ipam-state 1\n"
	tests := map[string]string{
		"empty":                 "",
		"no final newline":      strings.TrimSuffix(goldenState, "\n"),
		"truncated at line":     goldenState[:strings.Index(goldenState, "ip 172.7.22.9")],
		"truncated in line":     goldenState[:len(goldenState)-20],
		"header only":           h,
		"wrong version":         "weft-ipam-state 2\nend 0\n",
		"json":                  `{"Entries":{}}` + "\n",
		"no end":                h + "ip 10.0.0.2 a eth0\n",
		"end count low":         h + "ip 10.0.0.2 a eth0\nend 0\n",
		"end count high":        h + "ip 10.0.0.2 a eth0\nend 2\n",
		"end not a number":      h + "end x\n",
		"end twice":             h + "end 0\nend 0\n",
		"after end":             h + "end 0\nip 10.0.0.2 a eth0\n",
		"blank line":            h + "\nend 0\n",
		"crlf":                  "weft-ipam-state 1\r\nend 0\r\n",
		"last twice":            h + "last 10.0.0.2\nlast 10.0.0.3\nend 0\n",
		"last after entries":    h + "ip 10.0.0.2 a eth0\nlast 10.0.0.2\nend 1\n",
		"last bad":              h + "last 10.0.0.256\nend 0\n",
		"unknown keyword":       h + "ipx 10.0.0.2 a eth0\nend 1\n",
		"bad address":           h + "ip 10.0.0 a eth0\nend 1\n",
		"zone":                  h + "ip fe80::1%eth0 a eth0\nend 1\n",
		"ipv4-mapped":           h + "ip ::ffff:10.0.0.2 a eth0\nend 1\n",
		"missing ifname":        h + "ip 10.0.0.2 a\nend 1\n",
		"extra field":           h + "ip 10.0.0.2 a eth0 x\nend 1\n",
		"double space":          h + "ip 10.0.0.2  a eth0\nend 1\n",
		"bad id":                h + "ip 10.0.0.2 .. eth0\nend 1\n",
		"duplicate attachment":  h + "ip 10.0.0.2 a eth0\nip 10.0.0.3 a eth0\nend 2\n",
		"duplicate address":     h + "ip 10.0.0.2 a eth0\nip 10.0.0.2 b eth0\nend 2\n",
		"nul":                   h + "ip 10.0.0.2 a\x00 eth0\nend 1\n",
		"trailing garbage line": goldenState + "x\n",
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			st, err := parseState([]byte(in))
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("parseState(%q) = %+v, %v; want ErrCorrupt", in, st, err)
			}
		})
	}
}

func TestEncodeStateRefusesBadState(t *testing.T) {
	ip := netip.MustParseAddr("10.0.0.2")
	tests := map[string]*State{
		"bad name":         {Entries: map[Attachment]netip.Addr{{"a b", "eth0"}: ip}},
		"invalid address":  {Entries: map[Attachment]netip.Addr{{"a", "eth0"}: {}}},
		"zone":             {Entries: map[Attachment]netip.Addr{{"a", "eth0"}: netip.MustParseAddr("fe80::1%eth0")}},
		"bad last":         {Last: netip.MustParseAddr("::ffff:10.0.0.2"), Entries: map[Attachment]netip.Addr{}},
		"shared address":   {Entries: map[Attachment]netip.Addr{{"a", "eth0"}: ip, {"b", "eth0"}: ip}},
		"shared, 3 owners": {Entries: map[Attachment]netip.Addr{{"a", "eth0"}: ip, {"b", "eth0"}: ip, {"c", "x"}: ip}},
	}
	for name, st := range tests {
		if data, err := encodeState(st); err == nil {
			t.Errorf("%s: encoded as %q, want error", name, data)
		}
	}
}

// FuzzParseState: the parser never panics, and whatever it accepts encodes
// and parses back to the same state.
func FuzzParseState(f *testing.F) {
	f.Add([]byte(goldenState))
	f.Add([]byte("weft-ipam-state 1\nend 0\n"))
	f.Add([]byte("weft-ipam-state 1\nlast fd00::2\nip fd00::2 c eth0\nend 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseState(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		enc, err := encodeState(st)
		if err != nil {
			t.Fatalf("parsed state does not encode: %v", err)
		}
		back, err := parseState(enc)
		if err != nil {
			t.Fatalf("encoded state does not parse: %v\n%s", err, enc)
		}
		if back.Last != st.Last || !maps.Equal(back.Entries, st.Entries) {
			t.Fatalf("round trip changed the state: %+v -> %+v", st, back)
		}
	})
}

func BenchmarkStateCodec(b *testing.B) {
	st := NewState()
	for i := range 250 {
		a := Attachment{fmt.Sprintf("%064x", i), "eth0"}
		st.Entries[a] = netip.AddrFrom4([4]byte{172, 7, 21, byte(i + 2)})
	}
	data, err := encodeState(st)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("parse", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := parseState(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			if _, err := encodeState(st); err != nil {
				b.Fatal(err)
			}
		}
	})
}
