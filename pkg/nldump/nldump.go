// Package nldump retries netlink dumps the kernel interrupted: a dump that
// races with a change (a pod's veth added or deleted meanwhile) comes back
// flagged as possibly incomplete, and callers that act on what is missing
// from it (prune a route, free an address, take a node for not ready) must
// never act on a partial list.
package nldump

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Attempts is how often a dump is tried before giving up.
const Attempts = 10

// Complete runs dump until it returns without netlink.ErrDumpInterrupted,
// at most Attempts times; what names the dump in errors.
func Complete[T any](what string, dump func() ([]T, error)) ([]T, error) {
	out, err := retry(dump)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", what, err)
	}
	return out, nil
}

// Addrs is netlink.AddrList, retried; errors are left for the caller to
// name.
func Addrs(link netlink.Link, family int) ([]netlink.Addr, error) {
	return retry(func() ([]netlink.Addr, error) { return netlink.AddrList(link, family) })
}

// GlobalIPv4s are link's global unicast IPv4 addresses, in the kernel's
// order (the primary first): the addresses a node can be reached at and
// send from. Errors are left for the caller to name.
func GlobalIPv4s(link netlink.Link) ([]netip.Addr, error) {
	addrs, err := Addrs(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && ip.IsGlobalUnicast() {
			out = append(out, ip)
		}
	}
	return out, nil
}

// Routes is netlink.RouteListFiltered, retried; errors are left for the
// caller to name.
func Routes(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	return retry(func() ([]netlink.Route, error) { return netlink.RouteListFiltered(family, filter, mask) })
}

func retry[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range Attempts {
		var out []T
		out, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			if err != nil {
				return nil, err
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("interrupted %d times: %w", Attempts, err)
}
