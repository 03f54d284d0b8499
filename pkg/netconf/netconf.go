// Package netconf parses the cluster's network configuration, the JSON
// document flannel keeps at <prefix>/config in etcd, applying flannel's
// defaults and validation so that weft and flanneld read one file the same way.
package netconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"strings"
)

// Backend types weft implements.
const (
	BackendHostGW = "host-gw"
	BackendVXLAN  = "vxlan"
)

// vxlan defaults, as flannel's.
const (
	DefaultVNI       = 1
	DefaultVXLANPort = 8472
)

// MaxVNI is the largest VXLAN network identifier (24 bits).
const MaxVNI = 1<<24 - 1

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid network config")

// Backend is the "Backend" object of the network config.
type Backend struct {
	Type          string
	VNI           int
	Port          int
	MTU           int
	DirectRouting bool
	// GBP is vxlan's Group Based Policy extension, as flannel's option: a
	// device without it drops the marked packets (kube-proxy's) of peers
	// that have it, so every node of a network must agree. flannel's "Learning" is not kept: weft
	// programs every peer's FDB entry, so the kernel has nothing to learn.
	GBP bool
	// Defaulted reports that the config names no backend type: weft runs
	// host-gw, flanneld would run udp, so flannel nodes in the same cluster
	// could not reach weft's.
	Defaulted bool
}

// Config is a parsed, defaulted and validated network config.
type Config struct {
	Network   netip.Prefix
	SubnetLen int
	SubnetMin netip.Addr
	SubnetMax netip.Addr
	Backend   Backend
}

// rawConfig mirrors the JSON document; fields are strings so that errors can
// name the offending value. EnableIPv4 and EnableIPv6 are flannel's address
// family switches (IPv4 on, IPv6 off by default); weft checks them only to
// refuse what it cannot do. flannel's other IPv6 fields (IPv6Network, …) are
// ignored: they mean nothing while EnableIPv6 is off.
type rawConfig struct {
	EnableIPv4 *bool
	EnableIPv6 bool
	Network    string
	SubnetLen  int
	SubnetMin  string
	SubnetMax  string
	Backend    *rawBackend
}

type rawBackend struct {
	Type          string
	VNI           *int
	Port          *int
	MTU           int
	DirectRouting bool
	GBP           bool
}

// Parse decodes a flannel network config, fills in flannel's defaults and
// validates it. Every error wraps ErrInvalid.
func Parse(data []byte) (*Config, error) {
	var raw rawConfig
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: decoding JSON: %w", ErrInvalid, err)
	}
	if err := checkFamilies(raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	cfg := &Config{}
	if err := cfg.setNetwork(raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	backend, err := parseBackend(raw.Backend)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	cfg.Backend = backend
	return cfg, nil
}

// checkFamilies refuses configs that ask for IPv6: weft is IPv4-only, and
// running such a network IPv4-only would leave IPv6 pods unreachable.
func checkFamilies(raw rawConfig) error {
	if raw.EnableIPv6 {
		return errors.New(`"EnableIPv6": true is not supported: weft is IPv4-only (no dual-stack or IPv6 pod networks); ` +
			`remove EnableIPv6 or set it to false, or run flanneld for an IPv6 network`)
	}
	if raw.EnableIPv4 != nil && !*raw.EnableIPv4 {
		return errors.New(`"EnableIPv4": false is not supported: weft is IPv4-only and needs the IPv4 "Network"; ` +
			`remove EnableIPv4 or set it to true`)
	}
	return nil
}

func (c *Config) setNetwork(raw rawConfig) error {
	if raw.Network == "" {
		return errors.New(`"Network" is missing: set it to the cluster's pod CIDR, e.g. "172.7.0.0/16"`)
	}
	network, err := netip.ParsePrefix(raw.Network)
	if err != nil || !network.Addr().Is4() {
		return fmt.Errorf("Network %q is not an IPv4 CIDR", raw.Network)
	}
	c.Network = network.Masked()
	bits := c.Network.Bits()
	switch {
	case raw.SubnetLen == 0 && bits <= 22:
		c.SubnetLen = 24
	case raw.SubnetLen == 0:
		c.SubnetLen = bits + 2
	case raw.SubnetLen < 0 || raw.SubnetLen > 30:
		return fmt.Errorf("SubnetLen %d out of range: it must be at most 30 (room for the network, gateway and a pod)", raw.SubnetLen)
	default:
		c.SubnetLen = raw.SubnetLen
	}
	if c.SubnetLen > 30 {
		return fmt.Errorf("Network %s is too small: subnets would be /%d, at most /30 allowed", c.Network, c.SubnetLen)
	}
	if c.SubnetLen < bits+2 {
		return fmt.Errorf("Network %s must be able to accommodate at least four subnets of /%d", c.Network, c.SubnetLen)
	}
	if c.SubnetMin, err = c.bound("SubnetMin", raw.SubnetMin, c.firstSubnet().Next()); err != nil {
		return err
	}
	if c.SubnetMax, err = c.bound("SubnetMax", raw.SubnetMax, c.lastSubnet()); err != nil {
		return err
	}
	if c.SubnetMax.Less(c.SubnetMin) {
		return fmt.Errorf("SubnetMin %s is above SubnetMax %s", c.SubnetMin, c.SubnetMax)
	}
	return nil
}

// bound parses SubnetMin or SubnetMax, defaulting to def when it is unset:
// empty, or 0.0.0.0 as flannel reads it (the zero value of its config).
func (c *Config) bound(name, value string, def subnetAddr) (netip.Addr, error) {
	if value == "" {
		return def.addr, nil
	}
	addr, err := netip.ParseAddr(value)
	if err != nil || !addr.Is4() {
		return netip.Addr{}, fmt.Errorf("%s %q is not an IPv4 address", name, value)
	}
	if addr.IsUnspecified() {
		return def.addr, nil
	}
	if !c.Network.Contains(addr) {
		return netip.Addr{}, fmt.Errorf("%s %s is not in the range of the Network %s", name, addr, c.Network)
	}
	if netip.PrefixFrom(addr, c.SubnetLen).Masked().Addr() != addr {
		return netip.Addr{}, fmt.Errorf("%s is not on a SubnetLen boundary: %s", name, addr)
	}
	return addr, nil
}

func parseBackend(raw *rawBackend) (Backend, error) {
	if raw == nil || raw.Type == "" {
		// flannel would fall back to udp; weft's default is host-gw.
		return Backend{Type: BackendHostGW, Defaulted: true}, nil
	}
	b := Backend{Type: strings.ToLower(raw.Type), MTU: raw.MTU, DirectRouting: raw.DirectRouting}
	switch b.Type {
	case BackendHostGW:
	case BackendVXLAN:
		b.VNI, b.Port = DefaultVNI, DefaultVXLANPort
		if raw.VNI != nil {
			b.VNI = *raw.VNI
		}
		b.GBP = raw.GBP
		// Port 0 is flanneld's default too: it leaves the port to the
		// kernel, whose vxlan default is 8472.
		if raw.Port != nil && *raw.Port != 0 {
			b.Port = *raw.Port
		}
		if b.VNI < 0 || b.VNI > MaxVNI {
			return Backend{}, fmt.Errorf("Backend.VNI %d out of range 0..%d", b.VNI, MaxVNI)
		}
		if b.Port < 1 || b.Port > 65535 {
			return Backend{}, fmt.Errorf("Backend.Port %d out of range 1..65535", b.Port)
		}
	case "udp":
		return Backend{}, errors.New(`backend type "udp" is not implemented by weft: use "host-gw" (hosts on one segment) or "vxlan"`)
	default:
		return Backend{}, fmt.Errorf("backend type %q is not supported: use \"host-gw\" or \"vxlan\"", raw.Type)
	}
	if b.MTU < 0 || b.MTU > 65535 || (b.MTU > 0 && b.MTU < 576) {
		return Backend{}, fmt.Errorf("Backend.MTU %d out of range 576..65535", b.MTU)
	}
	return b, nil
}

// subnetAddr is the network address of one subnet, used while deriving bounds.
type subnetAddr struct {
	addr netip.Addr
	bits int
}

func (s subnetAddr) Next() subnetAddr {
	return subnetAddr{addr: addAddr(s.addr, 1<<(32-s.bits)), bits: s.bits}
}

func (c *Config) firstSubnet() subnetAddr {
	return subnetAddr{addr: c.Network.Addr(), bits: c.SubnetLen}
}

func (c *Config) lastSubnet() subnetAddr {
	size := uint32(1) << (32 - c.SubnetLen)
	total := uint32(1) << (32 - c.Network.Bits())
	return subnetAddr{addr: addAddr(c.Network.Addr(), total-size), bits: c.SubnetLen}
}

// Count is the number of subnets nodes can lease.
func (c *Config) Count() int {
	return int((toUint(c.SubnetMax)-toUint(c.SubnetMin))>>(32-c.SubnetLen)) + 1
}

// Subnets yields every subnet a node may lease, from SubnetMin to SubnetMax.
func (c *Config) Subnets() iter.Seq[netip.Prefix] {
	return func(yield func(netip.Prefix) bool) {
		step := uint32(1) << (32 - c.SubnetLen)
		for i, addr := 0, c.SubnetMin; i < c.Count(); i, addr = i+1, addAddr(addr, step) {
			if !yield(netip.PrefixFrom(addr, c.SubnetLen)) {
				return
			}
		}
	}
}

// Contains reports whether subnet is one that a node may lease: the right
// length, aligned, and between SubnetMin and SubnetMax.
func (c *Config) Contains(subnet netip.Prefix) bool {
	if !subnet.IsValid() || subnet.Bits() != c.SubnetLen || subnet.Masked() != subnet {
		return false
	}
	a := subnet.Addr()
	return a.Is4() && !a.Less(c.SubnetMin) && !c.SubnetMax.Less(a)
}

func toUint(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addAddr(a netip.Addr, n uint32) netip.Addr {
	v := toUint(a) + n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
