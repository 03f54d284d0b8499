// Package subnetfile reads and writes the node's subnet file in flannel's
// format (/run/flannel/subnet.env), which other tools and the weft plugin read
// to learn the node's pod subnet without asking etcd.
package subnetfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultPath is where weft keeps the subnet file unless told otherwise.
const DefaultPath = "/run/weft/subnet.env"

// ErrInvalid is wrapped by every parse error.
var ErrInvalid = errors.New("invalid subnet file")

// File is the content of a subnet file.
type File struct {
	Network netip.Prefix // FLANNEL_NETWORK, the cluster network
	Subnet  netip.Prefix // FLANNEL_SUBNET: the node's first usable address with the subnet length, e.g. 172.7.21.1/24
	MTU     int          // FLANNEL_MTU
	IPMasq  bool         // FLANNEL_IPMASQ, or WEFT_IPMASQ when Weft
	// Weft reports that weft's daemon wrote the file (WEFT_IPMASQ present):
	// then IPMasq is the daemon's masquerade setting for the node. In a file flanneld
	// left behind, FLANNEL_IPMASQ only says whether flanneld masqueraded (its
	// CNI chain masqueraded per pod otherwise), so weft does not follow it.
	Weft bool
}

// Lease is the node's leased subnet, e.g. 172.7.21.0/24.
func (f *File) Lease() netip.Prefix { return f.Subnet.Masked() }

// Gateway is the bridge address pods route through, e.g. 172.7.21.1.
func (f *File) Gateway() netip.Addr { return f.Subnet.Addr() }

// ForLease builds the File weft writes for a leased subnet.
func ForLease(network, lease netip.Prefix, mtu int, ipMasq bool) *File {
	return &File{Network: network, Subnet: netip.PrefixFrom(lease.Masked().Addr().Next(), lease.Bits()), MTU: mtu, IPMasq: ipMasq, Weft: true}
}

// Marshal renders the file as flannel writes it, plus WEFT_IPMASQ when
// Weft (flannel's readers ignore keys they do not know).
func (f *File) Marshal() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "FLANNEL_NETWORK=%s\n", f.Network)
	fmt.Fprintf(&b, "FLANNEL_SUBNET=%s\n", f.Subnet)
	fmt.Fprintf(&b, "FLANNEL_MTU=%d\n", f.MTU)
	fmt.Fprintf(&b, "FLANNEL_IPMASQ=%t\n", f.IPMasq)
	if f.Weft {
		fmt.Fprintf(&b, "WEFT_IPMASQ=%t\n", f.IPMasq)
	}
	return b.Bytes()
}

// Parse reads a subnet file. FLANNEL_NETWORK and FLANNEL_SUBNET are required,
// the subnet must lie inside the network, and unknown keys (flannel's IPv6
// ones) are ignored.
func Parse(data []byte) (*File, error) {
	f := &File{}
	var weftMasq *bool
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		if !ok {
			return nil, fmt.Errorf("%w: line %d: no '='", ErrInvalid, line)
		}
		if key == "WEFT_IPMASQ" {
			v, err := strconv.ParseBool(value)
			if err != nil {
				return nil, fmt.Errorf("%w: line %d: %s %q is not a boolean", ErrInvalid, line, key, value)
			}
			weftMasq = &v
		} else if err := f.set(key, value); err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", ErrInvalid, line, err)
		}
		seen[key] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if weftMasq != nil {
		f.IPMasq, f.Weft = *weftMasq, true
	}
	for _, key := range []string{"FLANNEL_NETWORK", "FLANNEL_SUBNET"} {
		if !seen[key] {
			return nil, fmt.Errorf("%w: %s missing", ErrInvalid, key)
		}
	}
	if !f.Network.Contains(f.Subnet.Addr()) || f.Subnet.Bits() < f.Network.Bits() {
		return nil, fmt.Errorf("%w: FLANNEL_SUBNET %s is not inside FLANNEL_NETWORK %s", ErrInvalid, f.Subnet, f.Network)
	}
	// The gateway is the lease's first address, as flanneld writes it; the
	// IPAM keeps that one address back, so any other would be handed to a
	// pod while the bridge holds it.
	if first := f.Subnet.Masked().Addr().Next(); f.Subnet.Addr() != first {
		return nil, fmt.Errorf("%w: FLANNEL_SUBNET %s: the gateway must be the subnet's first address, %s/%d", ErrInvalid, f.Subnet, first, f.Subnet.Bits())
	}
	return f, nil
}

func (f *File) set(key, value string) error {
	var err error
	switch key {
	case "FLANNEL_NETWORK":
		f.Network, err = parsePrefix(key, value)
		f.Network = f.Network.Masked()
	case "FLANNEL_SUBNET":
		f.Subnet, err = parsePrefix(key, value)
		if err == nil && f.Subnet.Bits() > 30 {
			err = fmt.Errorf("%s %s: subnet too small", key, value)
		}
	case "FLANNEL_MTU":
		f.MTU, err = strconv.Atoi(value)
		if err != nil || f.MTU < 0 || f.MTU > 65535 {
			err = fmt.Errorf("%s %q is not an MTU", key, value)
		}
	case "FLANNEL_IPMASQ":
		f.IPMasq, err = strconv.ParseBool(value)
		if err != nil {
			err = fmt.Errorf("%s %q is not a boolean", key, value)
		}
	}
	return err
}

func parsePrefix(key, value string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(value)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%s %q is not an IPv4 CIDR", key, value)
	}
	return p, nil
}

// Read parses the subnet file at path; a missing file gives an error for which
// errors.Is(err, fs.ErrNotExist) holds.
func Read(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading subnet file: %w", err)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("subnet file %s: %w", path, err)
	}
	return f, nil
}

// Write replaces the subnet file atomically: readers see the old file or the
// new one, never a torn one. It is a no-op when the content is unchanged.
func Write(path string, f *File) error {
	data := f.Marshal()
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating subnet file directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing subnet file: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("writing subnet file %s: %w", path, err)
	}
	return nil
}
