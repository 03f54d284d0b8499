package lease

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// ErrBadAttrs is wrapped when a lease value cannot be decoded or encoded.
var ErrBadAttrs = errors.New("malformed lease attributes")

// Attrs is the value stored at a subnet key, flannel's LeaseAttrs:
//
//	{"PublicIP":"10.4.7.21","PublicIPv6":null,"BackendType":"host-gw"}
//
// vxlan adds "BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}.
// Fields weft does not use (flannel's BackendV6Data) are kept verbatim from
// a decoded value and written back after the known ones, so that rewriting a
// lease flannel wrote does not drop what flannel peers read (see WithUnknownFrom).
type Attrs struct {
	PublicIP    netip.Addr
	PublicIPv6  *netip.Addr
	BackendType string
	BackendData json.RawMessage

	unknown map[string]json.RawMessage // fields of the decoded value weft does not use
}

// knownFields are wireAttrs' names. encoding/json matches names without
// regard to case, so a key is unknown only if it folds to none of these.
var knownFields = []string{"PublicIP", "PublicIPv6", "BackendType", "BackendData"}

// wireAttrs is the JSON shape, in flannel's field order.
type wireAttrs struct {
	PublicIP    *string
	PublicIPv6  *string
	BackendType string          `json:",omitempty"`
	BackendData json.RawMessage `json:",omitempty"`
}

// MarshalJSON encodes a as flannel does.
func (a Attrs) MarshalJSON() ([]byte, error) {
	if !a.PublicIP.Is4() {
		return nil, fmt.Errorf("%w: PublicIP %v is not an IPv4 address", ErrBadAttrs, a.PublicIP)
	}
	ip := a.PublicIP.String()
	w := wireAttrs{PublicIP: &ip, BackendType: a.BackendType}
	if a.PublicIPv6 != nil {
		if !a.PublicIPv6.Is6() {
			return nil, fmt.Errorf("%w: PublicIPv6 %v is not an IPv6 address", ErrBadAttrs, *a.PublicIPv6)
		}
		v6 := a.PublicIPv6.String()
		w.PublicIPv6 = &v6
	}
	if !isNull(a.BackendData) {
		if !json.Valid(a.BackendData) {
			return nil, fmt.Errorf("%w: BackendData is not valid JSON", ErrBadAttrs)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, a.BackendData); err != nil {
			return nil, fmt.Errorf("%w: BackendData: %w", ErrBadAttrs, err)
		}
		w.BackendData = buf.Bytes()
	}
	out, err := encodeJSON(w)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadAttrs, err)
	}
	return appendUnknown(out, a.unknown)
}

// encodeJSON is json.Marshal without HTML escaping (flannel's values are
// written by Go's default encoder, but "<" in data must survive a round trip
// unchanged either way).
func encodeJSON(v any) ([]byte, error) {
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n")), nil
}

// appendUnknown adds the unknown fields, sorted by name, to the encoded
// object obj.
func appendUnknown(obj []byte, unknown map[string]json.RawMessage) ([]byte, error) {
	if len(unknown) == 0 {
		return obj, nil
	}
	out := bytes.NewBuffer(bytes.TrimSuffix(obj, []byte("}")))
	for _, name := range slices.Sorted(maps.Keys(unknown)) {
		key, err := encodeJSON(name)
		if err != nil {
			return nil, fmt.Errorf("%w: field name %q: %w", ErrBadAttrs, name, err)
		}
		out.WriteByte(',')
		out.Write(key)
		out.WriteByte(':')
		if err := json.Compact(out, unknown[name]); err != nil {
			return nil, fmt.Errorf("%w: field %s: %w", ErrBadAttrs, key, err)
		}
	}
	out.WriteByte('}')
	return out.Bytes(), nil
}

// UnmarshalJSON decodes a value written by weft or flannel. PublicIP must be
// an IPv4 address; PublicIPv6 may be null or absent.
func (a *Attrs) UnmarshalJSON(data []byte) error {
	var w wireAttrs
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("%w: %w", ErrBadAttrs, err)
	}
	if w.PublicIP == nil {
		return fmt.Errorf("%w: PublicIP is missing", ErrBadAttrs)
	}
	ip, err := netip.ParseAddr(*w.PublicIP)
	if err != nil || !ip.Is4() {
		return fmt.Errorf("%w: PublicIP %q is not an IPv4 address", ErrBadAttrs, *w.PublicIP)
	}
	out := Attrs{PublicIP: ip, BackendType: w.BackendType}
	if w.PublicIPv6 != nil {
		v6, err := netip.ParseAddr(*w.PublicIPv6)
		if err != nil || !v6.Is6() {
			return fmt.Errorf("%w: PublicIPv6 %q is not an IPv6 address", ErrBadAttrs, *w.PublicIPv6)
		}
		out.PublicIPv6 = &v6
	}
	if !isNull(w.BackendData) {
		out.BackendData = append(json.RawMessage(nil), w.BackendData...)
	}
	if out.unknown, err = decodeUnknown(data); err != nil {
		return err
	}
	*a = out
	return nil
}

// decodeUnknown returns the fields of the JSON object data that are not
// knownFields, or nil if there are none.
func decodeUnknown(data []byte) (map[string]json.RawMessage, error) {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadAttrs, err)
	}
	maps.DeleteFunc(all, func(name string, _ json.RawMessage) bool {
		return slices.ContainsFunc(knownFields, func(k string) bool { return strings.EqualFold(k, name) })
	})
	if len(all) == 0 {
		return nil, nil
	}
	return all, nil
}

// WithUnknownFrom returns a with what a value decoded as old carried beyond
// a: its PublicIPv6 when a has none, and the fields weft does not use
// (flannel's BackendV6Data, …) that a does not set itself. A rewrite of the
// node's own lease uses it, so flannel peers that decode those fields keep
// reading the lease.
func (a Attrs) WithUnknownFrom(old Attrs) Attrs {
	if a.PublicIPv6 == nil {
		a.PublicIPv6 = old.PublicIPv6
	}
	if len(old.unknown) == 0 {
		return a
	}
	merged := maps.Clone(old.unknown)
	maps.Copy(merged, a.unknown)
	a.unknown = merged
	return a
}

// Equal reports whether a and b encode the same attributes. BackendData and
// the fields weft does not use are compared as JSON values, so key order and
// spacing do not matter.
func (a Attrs) Equal(b Attrs) bool {
	if a.PublicIP != b.PublicIP || a.BackendType != b.BackendType {
		return false
	}
	if (a.PublicIPv6 == nil) != (b.PublicIPv6 == nil) {
		return false
	}
	if a.PublicIPv6 != nil && *a.PublicIPv6 != *b.PublicIPv6 {
		return false
	}
	if !bytes.Equal(canonicalJSON(a.BackendData), canonicalJSON(b.BackendData)) {
		return false
	}
	return maps.EqualFunc(a.unknown, b.unknown, func(x, y json.RawMessage) bool {
		return bytes.Equal(canonicalJSON(x), canonicalJSON(y))
	})
}

// canonicalJSON re-encodes raw with sorted object keys; nil for null, absent
// or invalid JSON (invalid JSON never equals valid JSON: it is kept verbatim).
func canonicalJSON(raw json.RawMessage) []byte {
	if isNull(raw) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return append([]byte("invalid:"), raw...)
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return append([]byte("invalid:"), raw...)
	}
	return out.Bytes()
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

// VXLANData is the BackendData of a vxlan lease, as flannel's vxlan backend
// writes it: {"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}.
type VXLANData struct {
	VNI     int
	VtepMAC net.HardwareAddr
}

type wireVXLAN struct {
	VNI     int
	VtepMAC string
}

// MarshalJSON writes the MAC address as a colon-separated string.
func (d VXLANData) MarshalJSON() ([]byte, error) {
	if len(d.VtepMAC) != 6 {
		return nil, fmt.Errorf("%w: VtepMAC %v is not a 48-bit MAC address", ErrBadAttrs, d.VtepMAC)
	}
	b, err := json.Marshal(wireVXLAN{VNI: d.VNI, VtepMAC: d.VtepMAC.String()})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadAttrs, err)
	}
	return b, nil
}

// UnmarshalJSON reads flannel's vxlan BackendData.
func (d *VXLANData) UnmarshalJSON(data []byte) error {
	var w wireVXLAN
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("%w: vxlan BackendData: %w", ErrBadAttrs, err)
	}
	mac, err := net.ParseMAC(w.VtepMAC)
	if err != nil || len(mac) != 6 {
		return fmt.Errorf("%w: vxlan BackendData: VtepMAC %q is not a 48-bit MAC address", ErrBadAttrs, w.VtepMAC)
	}
	*d = VXLANData{VNI: w.VNI, VtepMAC: mac}
	return nil
}

// VXLAN decodes BackendData as vxlan data.
func (a Attrs) VXLAN() (VXLANData, error) {
	var d VXLANData
	if isNull(a.BackendData) {
		return d, fmt.Errorf("%w: lease of %s has no vxlan BackendData", ErrBadAttrs, a.PublicIP)
	}
	if err := json.Unmarshal(a.BackendData, &d); err != nil {
		return d, err
	}
	return d, nil
}
