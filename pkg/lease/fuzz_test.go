package lease

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzParseSubnetKey: whatever parses is a canonical IPv4 network that
// SubnetKey writes back as the same key name.
func FuzzParseSubnetKey(f *testing.F) {
	for _, s := range []string{"172.7.21.0-24", "/coreos.com/network/subnets/10.5.72.0-24&fc00::-64", "1.2.3.4-32", "0.0.0.0-0", "a-b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		subnet, err := ParseSubnetKey(key)
		if err != nil {
			return
		}
		if !subnet.Addr().Is4() || subnet.Masked() != subnet {
			t.Fatalf("ParseSubnetKey(%q) = %v: not a canonical IPv4 network", key, subnet)
		}
		name := key[strings.LastIndexByte(key, '/')+1:]
		name, _, _ = strings.Cut(name, "&")
		back := SubnetKey("/p", subnet)
		if !strings.HasSuffix(back, "/"+name) {
			t.Fatalf("ParseSubnetKey(%q) = %v, whose key %q does not end in %q", key, subnet, back, name)
		}
		if again, err := ParseSubnetKey(back); err != nil || again != subnet {
			t.Fatalf("ParseSubnetKey(SubnetKey(%v)) = %v, %v", subnet, again, err)
		}
	})
}

// FuzzDecodeAttrs: whatever decodes encodes, and decodes back to Equal
// attributes. Its BackendData, read as vxlan data (the vxlan backend reads
// every peer's lease so), is either refused with ErrBadAttrs or gives a VNI
// and a 48-bit MAC that encode and decode back to themselves, and the
// re-encoded lease reads as the same vxlan data.
func FuzzDecodeAttrs(f *testing.F) {
	for _, s := range []string{
		`{"PublicIP":"10.4.7.21","PublicIPv6":null,"BackendType":"host-gw"}`,
		`{"PublicIP":"10.4.7.22","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`,
		`{"PublicIP":"10.4.7.23","PublicIPv6":"fc00::23","BackendType":"vxlan","BackendData":{"VtepMAC":"0a:58:0a:f4:01:01","VNI":1},"BackendV6Data":{"VNI":1}}`,
		`{"PublicIP":"10.0.0.1","BackendData":null}`,
		`{"PublicIP":""}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var a Attrs
		if err := json.Unmarshal(data, &a); err != nil {
			return
		}
		enc, err := a.MarshalJSON()
		if err != nil {
			t.Fatalf("decoded %q to %+v, which does not encode: %v", data, a, err)
		}
		var b Attrs
		if err := json.Unmarshal(enc, &b); err != nil {
			t.Fatalf("re-decoding %s: %v", enc, err)
		}
		if !a.Equal(b) {
			t.Fatalf("round trip changed %+v to %+v (via %s)", a, b, enc)
		}
		if again, err := b.MarshalJSON(); err != nil || string(again) != string(enc) {
			t.Fatalf("encoding is not stable: %s then %s (%v)", enc, again, err)
		}
		checkVXLAN(t, a, b)
	})
}

// checkVXLAN checks the vxlan reading of a decoded lease a and of b, the
// same lease after an encode and decode.
func checkVXLAN(t *testing.T, a, b Attrs) {
	t.Helper()
	d, err := a.VXLAN()
	db, errb := b.VXLAN()
	if (err == nil) != (errb == nil) {
		t.Fatalf("vxlan data of %s decodes as %+v, %v but after a round trip as %+v, %v", a.BackendData, d, err, db, errb)
	}
	if err != nil {
		if !errors.Is(err, ErrBadAttrs) {
			t.Fatalf("vxlan data %s refused with %v, want ErrBadAttrs", a.BackendData, err)
		}
		return
	}
	if len(d.VtepMAC) != 6 {
		t.Fatalf("vxlan data %s accepted with a %d-byte MAC %v", a.BackendData, len(d.VtepMAC), d.VtepMAC)
	}
	if db.VNI != d.VNI || !bytes.Equal(db.VtepMAC, d.VtepMAC) {
		t.Fatalf("vxlan data %+v became %+v in a lease round trip", d, db)
	}
	enc, err := json.Marshal(d)
	if err != nil {
		t.Fatalf("vxlan data %+v (from %s) does not encode: %v", d, a.BackendData, err)
	}
	var again VXLANData
	if err := json.Unmarshal(enc, &again); err != nil || again.VNI != d.VNI || !bytes.Equal(again.VtepMAC, d.VtepMAC) {
		t.Fatalf("vxlan data %+v encodes as %s, which decodes as %+v, %v", d, enc, again, err)
	}
}
