package lease

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultPrefix is flannel's default etcd prefix.
const DefaultPrefix = "/coreos.com/network"

// ErrBadSubnetKey is wrapped by ParseSubnetKey errors.
var ErrBadSubnetKey = errors.New("malformed subnet key")

// SubnetKey returns the etcd key of subnet under prefix, in flannel's form
// "<prefix>/subnets/172.7.21.0-24". An empty prefix means DefaultPrefix.
func SubnetKey(prefix string, subnet netip.Prefix) string {
	return subnetsDir(prefix) + subnetKeyName(subnet)
}

func subnetKeyName(subnet netip.Prefix) string {
	return subnet.Addr().String() + "-" + strconv.Itoa(subnet.Bits())
}

func normalizePrefix(prefix string) string {
	prefix = strings.TrimRight(prefix, "/")
	if prefix == "" {
		return DefaultPrefix
	}
	return prefix
}

func subnetsDir(prefix string) string {
	return normalizePrefix(prefix) + "/subnets/"
}

func configKey(prefix string) string {
	return normalizePrefix(prefix) + "/config"
}

// ParseSubnetKey parses a subnet key, either a whole key or its last element
// ("172.7.21.0-24"). A flannel dual-stack key ("172.7.21.0-24&fc00::-64")
// yields its IPv4 subnet. Only the canonical form SubnetKey writes is
// accepted: an IPv4 network address with no host bits set and a decimal
// prefix length without leading zeros.
func ParseSubnetKey(key string) (netip.Prefix, error) {
	name := key[strings.LastIndexByte(key, '/')+1:]
	if v4, _, dual := strings.Cut(name, "&"); dual {
		name = v4
	}
	addrPart, bitsPart, ok := cutLast(name, "-")
	if !ok {
		return netip.Prefix{}, fmt.Errorf("%w %q: want <ip>-<length>", ErrBadSubnetKey, key)
	}
	addr, err := netip.ParseAddr(addrPart)
	if err != nil || !addr.Is4() {
		return netip.Prefix{}, fmt.Errorf("%w %q: %q is not an IPv4 address", ErrBadSubnetKey, key, addrPart)
	}
	bits, err := strconv.Atoi(bitsPart)
	if err != nil || bits < 0 || bits > 32 || strconv.Itoa(bits) != bitsPart {
		return netip.Prefix{}, fmt.Errorf("%w %q: %q is not a prefix length 0..32", ErrBadSubnetKey, key, bitsPart)
	}
	subnet := netip.PrefixFrom(addr, bits)
	if subnet.Masked() != subnet {
		return netip.Prefix{}, fmt.Errorf("%w %q: %s has host bits set", ErrBadSubnetKey, key, subnet)
	}
	return subnet, nil
}

func cutLast(s, sep string) (before, after string, found bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}
