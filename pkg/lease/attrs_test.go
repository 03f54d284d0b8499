package lease

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestAttrsMarshalFlannelShape(t *testing.T) {
	mac, _ := net.ParseMAC("aa:bb:cc:dd:ee:ff")
	vx, err := json.Marshal(VXLANData{VNI: 1, VtepMAC: mac})
	if err != nil {
		t.Fatalf("marshal VXLANData: %v", err)
	}
	v6 := netip.MustParseAddr("fc00::21")
	tests := []struct {
		name  string
		attrs Attrs
		want  string
	}{
		{"host-gw", hostGW("10.4.7.21"), `{"PublicIP":"10.4.7.21","PublicIPv6":null,"BackendType":"host-gw"}`},
		{"vxlan", Attrs{PublicIP: netip.MustParseAddr("10.4.7.22"), BackendType: "vxlan", BackendData: vx},
			`{"PublicIP":"10.4.7.22","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`},
		{"ipv6 and spaced data", Attrs{PublicIP: netip.MustParseAddr("10.4.7.23"), PublicIPv6: &v6, BackendData: json.RawMessage(` {"A": "<b>"} `)},
			`{"PublicIP":"10.4.7.23","PublicIPv6":"fc00::21","BackendData":{"A":"<b>"}}`},
		{"null data", Attrs{PublicIP: netip.MustParseAddr("10.4.7.24"), BackendType: "host-gw", BackendData: json.RawMessage("null")},
			`{"PublicIP":"10.4.7.24","PublicIPv6":null,"BackendType":"host-gw"}`},
	}
	for _, tt := range tests {
		got, err := tt.attrs.MarshalJSON()
		if err != nil {
			t.Errorf("%s: MarshalJSON: %v", tt.name, err)
			continue
		}
		if string(got) != tt.want {
			t.Errorf("%s: MarshalJSON =\n %s\nwant\n %s", tt.name, got, tt.want)
		}
	}
}

func TestAttrsMarshalInvalid(t *testing.T) {
	v4 := netip.MustParseAddr("10.0.0.1")
	for name, a := range map[string]Attrs{
		"no PublicIP":   {},
		"IPv6 PublicIP": {PublicIP: netip.MustParseAddr("fc00::1")},
		"IPv4 as v6":    {PublicIP: v4, PublicIPv6: &v4},
		"bad data":      {PublicIP: v4, BackendData: json.RawMessage("{")},
	} {
		if _, err := a.MarshalJSON(); !errors.Is(err, ErrBadAttrs) {
			t.Errorf("%s: MarshalJSON error = %v, want ErrBadAttrs", name, err)
		}
	}
}

func TestAttrsDecodeFlannelValue(t *testing.T) {
	// As flanneld's vxlan backend writes it, with fields weft ignores.
	raw := `{"PublicIP":"10.4.7.31","PublicIPv6":"fc00::31","BackendType":"vxlan",` +
		`"BackendData":{"VtepMAC":"0a:58:0a:f4:01:01","VNI":1},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:02"}}`
	var a Attrs
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if a.PublicIP != netip.MustParseAddr("10.4.7.31") || a.PublicIPv6 == nil || *a.PublicIPv6 != netip.MustParseAddr("fc00::31") {
		t.Errorf("addresses = %v, %v", a.PublicIP, a.PublicIPv6)
	}
	if a.BackendType != "vxlan" {
		t.Errorf("BackendType = %q", a.BackendType)
	}
	vx, err := a.VXLAN()
	if err != nil {
		t.Fatalf("VXLAN: %v", err)
	}
	if vx.VNI != 1 || vx.VtepMAC.String() != "0a:58:0a:f4:01:01" {
		t.Errorf("VXLAN = %+v", vx)
	}
	want := Attrs{PublicIP: a.PublicIP, PublicIPv6: a.PublicIPv6, BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:01"}`),
		unknown:     map[string]json.RawMessage{"BackendV6Data": json.RawMessage(`{"VtepMAC":"0a:58:0a:f4:01:02","VNI":1}`)}}
	if !a.Equal(want) {
		t.Errorf("decoded %+v, not Equal to %+v (key order must not matter)", a, want)
	}
	want.unknown = nil
	if a.Equal(want) {
		t.Error("a value with BackendV6Data is Equal to one without: a rewrite would drop it")
	}
}

// TestAttrsKeepUnknownFields: fields weft does not use survive a decode and
// encode, after the known ones, sorted, and never twice.
func TestAttrsKeepUnknownFields(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"flannel dual-stack vxlan",
			`{"PublicIP":"10.4.7.31","PublicIPv6":"fc00::31","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:01"},"BackendV6Data":{"VNI":1, "VtepMAC":"0a:58:0a:f4:01:02"}}`,
			`{"PublicIP":"10.4.7.31","PublicIPv6":"fc00::31","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:02"}}`},
		{"sorted, null kept", `{"Zeta":1,"PublicIP":"10.0.0.1","Alpha":null}`,
			`{"PublicIP":"10.0.0.1","PublicIPv6":null,"Alpha":null,"Zeta":1}`},
		{"known names in another case are not repeated", `{"PublicIP":"10.0.0.1","publicip":"10.0.0.2","BACKENDTYPE":"vxlan"}`,
			`{"PublicIP":"10.0.0.2","PublicIPv6":null,"BackendType":"vxlan"}`},
		{"escaped name", `{"PublicIP":"10.0.0.1","a\"<b>":"<&>"}`,
			`{"PublicIP":"10.0.0.1","PublicIPv6":null,"a\"<b>":"<&>"}`},
	}
	for _, tt := range tests {
		var a Attrs
		if err := json.Unmarshal([]byte(tt.in), &a); err != nil {
			t.Errorf("%s: Unmarshal: %v", tt.name, err)
			continue
		}
		got, err := a.MarshalJSON()
		if err != nil || string(got) != tt.want {
			t.Errorf("%s: MarshalJSON =\n %s (%v)\nwant\n %s", tt.name, got, err, tt.want)
		}
	}
}

// TestAttrsWithUnknownFrom: weft's attributes for its own lease keep the
// IPv6 address and unknown fields of the value flannel wrote.
func TestAttrsWithUnknownFrom(t *testing.T) {
	var old Attrs
	if err := json.Unmarshal([]byte(`{"PublicIP":"10.4.7.31","PublicIPv6":"fc00::31","BackendType":"vxlan",`+
		`"BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:02"}}`), &old); err != nil {
		t.Fatal(err)
	}
	ours := Attrs{PublicIP: old.PublicIP, BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`)}
	got, err := ours.WithUnknownFrom(old).MarshalJSON()
	want := `{"PublicIP":"10.4.7.31","PublicIPv6":"fc00::31","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"},` +
		`"BackendV6Data":{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:02"}}`
	if err != nil || string(got) != want {
		t.Errorf("merged = %s (%v), want %s", got, err, want)
	}
	if !old.WithUnknownFrom(old).Equal(old) || !hostGW("10.0.0.1").WithUnknownFrom(Attrs{}).Equal(hostGW("10.0.0.1")) {
		t.Error("WithUnknownFrom changed attributes that had nothing to add")
	}
}

func TestAttrsDecodeHostGW(t *testing.T) {
	var a Attrs
	if err := json.Unmarshal([]byte(`{"PublicIP":"10.4.7.21","PublicIPv6":null,"BackendType":"host-gw"}`), &a); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if !a.Equal(hostGW("10.4.7.21")) || a.BackendData != nil {
		t.Errorf("decoded %+v", a)
	}
	if _, err := a.VXLAN(); !errors.Is(err, ErrBadAttrs) {
		t.Errorf("VXLAN of a host-gw lease: %v, want ErrBadAttrs", err)
	}
}

func TestAttrsDecodeInvalid(t *testing.T) {
	for _, raw := range []string{
		``, `null`, `[]`, `{}`, `{"PublicIP":null}`, `{"PublicIP":""}`, `{"PublicIP":"fc00::1"}`,
		`{"PublicIP":"10.0.0.1","PublicIPv6":"10.0.0.2"}`, `{"PublicIP":10}`, `{"PublicIP":"10.0.0.1"`,
	} {
		var a Attrs
		if err := json.Unmarshal([]byte(raw), &a); err == nil {
			t.Errorf("Unmarshal(%q) = %+v, want an error", raw, a)
		}
	}
}

func TestAttrsEqual(t *testing.T) {
	v6a, v6b := netip.MustParseAddr("fc00::1"), netip.MustParseAddr("fc00::2")
	base := Attrs{PublicIP: netip.MustParseAddr("10.0.0.1"), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1}`)}
	with := func(f func(*Attrs)) Attrs { a := base; f(&a); return a }
	tests := []struct {
		b    Attrs
		want bool
	}{
		{base, true},
		{with(func(a *Attrs) { a.BackendData = json.RawMessage(` { "VNI" : 1 } `) }), true},
		{with(func(a *Attrs) { a.BackendData = json.RawMessage(`{"VNI":2}`) }), false},
		{with(func(a *Attrs) { a.BackendData = nil }), false},
		{with(func(a *Attrs) { a.BackendType = "host-gw" }), false},
		{with(func(a *Attrs) { a.PublicIP = netip.MustParseAddr("10.0.0.2") }), false},
		{with(func(a *Attrs) { a.PublicIPv6 = &v6a }), false},
	}
	for i, tt := range tests {
		if got := base.Equal(tt.b); got != tt.want {
			t.Errorf("%d: Equal = %v, want %v", i, got, tt.want)
		}
	}
	x, y := with(func(a *Attrs) { a.PublicIPv6 = &v6a }), with(func(a *Attrs) { a.PublicIPv6 = &v6b })
	if x.Equal(y) {
		t.Error("different PublicIPv6 compared equal")
	}
}

func TestVXLANDataInvalid(t *testing.T) {
	if _, err := json.Marshal(VXLANData{VNI: 1}); err == nil {
		t.Error("Marshal with no MAC succeeded")
	}
	var d VXLANData
	for _, raw := range []string{`{"VNI":1,"VtepMAC":"zz"}`, `{"VNI":1,"VtepMAC":"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"}`, `{"VNI":"1"}`} {
		if err := json.Unmarshal([]byte(raw), &d); err == nil {
			t.Errorf("Unmarshal(%s) succeeded", raw)
		}
	}
}
