// Package route computes the routes a node needs to reach other nodes' pod
// subnets and applies them: HostGW and Diff are pure, Reconcile drives a
// Programmer, and Netlink is the Programmer for the kernel (DESIGN
// invariant 5: every route to a pod subnet points at the node that holds it
// now).
package route

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
)

// Peer is a node that holds a subnet of the cluster network.
type Peer struct {
	Subnet   netip.Prefix
	PublicIP netip.Addr
}

// Route is a route to a pod subnet. In a desired route, LinkIndex 0 means
// "whichever link the kernel picks for Gateway".
type Route struct {
	Dst       netip.Prefix
	Gateway   netip.Addr
	LinkIndex int
	OnLink    bool
}

func (r Route) String() string {
	if r.Gateway.IsValid() {
		return fmt.Sprintf("%s via %s", r.Dst, r.Gateway)
	}
	return r.Dst.String()
}

// matches reports whether actual satisfies r, read as a desired route.
func (r Route) matches(actual Route) bool {
	return r.Gateway == actual.Gateway && r.OnLink == actual.OnLink &&
		(r.LinkIndex == 0 || r.LinkIndex == actual.LinkIndex)
}

// HostGW returns the host-gw routes for peers: one per peer subnet other
// than self, via the peer's public IP. Peers with an invalid subnet or
// address are skipped; when two peers claim one subnet the first wins.
func HostGW(peers []Peer, self netip.Prefix) []Route {
	self = self.Masked()
	seen := make(map[netip.Prefix]bool, len(peers))
	routes := make([]Route, 0, len(peers))
	for _, p := range peers {
		dst := p.Subnet.Masked()
		if !dst.IsValid() || !p.PublicIP.IsValid() || dst == self || seen[dst] {
			continue
		}
		seen[dst] = true
		routes = append(routes, Route{Dst: dst, Gateway: p.PublicIP.Unmap()})
	}
	return routes
}

// Diff compares desired with actual routes, keyed by destination. upsert
// holds the desired routes that are missing or differ (another gateway,
// link or on-link flag); remove holds the actual routes to destinations no
// desired route names. Both come sorted by destination, whatever the input
// order. A destination named twice in desired counts once, first wins.
func Diff(desired, actual []Route) (upsert, remove []Route) {
	have := make(map[netip.Prefix]Route, len(actual))
	var more map[netip.Prefix][]Route // further routes to one destination; rare
	for _, a := range actual {
		dst := a.Dst.Masked()
		if _, dup := have[dst]; !dup {
			have[dst] = a
			continue
		}
		if more == nil {
			more = map[netip.Prefix][]Route{}
		}
		more[dst] = append(more[dst], a)
	}
	want := make(map[netip.Prefix]bool, len(desired))
	for _, d := range desired {
		dst := d.Dst.Masked()
		if want[dst] {
			continue
		}
		want[dst] = true
		a, ok := have[dst]
		if !ok || !d.matches(a) && !slices.ContainsFunc(more[dst], d.matches) {
			upsert = append(upsert, d)
		}
	}
	for _, a := range actual {
		if !want[a.Dst.Masked()] {
			remove = append(remove, a)
		}
	}
	slices.SortFunc(upsert, compareRoutes)
	slices.SortFunc(remove, compareRoutes)
	return upsert, remove
}

func compareRoutes(a, b Route) int {
	return cmp.Or(
		a.Dst.Addr().Compare(b.Dst.Addr()),
		cmp.Compare(a.Dst.Bits(), b.Dst.Bits()),
		a.Gateway.Compare(b.Gateway),
		cmp.Compare(a.LinkIndex, b.LinkIndex),
	)
}

// Programmer reads and writes routes; Netlink does it in the kernel.
// Errors should wrap the underlying errno so that callers can test it.
type Programmer interface {
	// List returns the routes whose destination lies inside network.
	List(network netip.Prefix) ([]Route, error)
	// Replace adds the route, or replaces the one to the same destination.
	Replace(Route) error
	// Delete removes the route; a route that is already gone is no error.
	Delete(Route) error
}

// Result counts the changes Reconcile made, and the desired routes it
// could not put in place (outside the network, or refused by the kernel).
type Result struct {
	Upserted, Removed int
	Failed            int
}

// Reconcile makes the routes into network match desired. It only looks at
// routes to subnets strictly inside network and never at the route to self
// (the bridge's connected route), so other routes on the node are left
// alone. With prune it also removes routes into network that no desired
// route names, such as routes for leases that vanished; without prune it
// only adds and replaces. A route that fails does not stop the others: all
// failures come back joined.
func Reconcile(p Programmer, network, self netip.Prefix, desired []Route, prune bool) (Result, error) {
	network, self = network.Masked(), self.Masked()
	var (
		res  Result
		errs []error
	)
	want := make([]Route, 0, len(desired))
	for _, r := range desired {
		switch {
		case r.Dst.Masked() == self:
		case !inside(network, r.Dst):
			errs = append(errs, fmt.Errorf("route to %s: outside the cluster network %s", r, network))
			res.Failed++
		default:
			want = append(want, r)
		}
	}
	listed, err := p.List(network)
	if err != nil {
		return res, errors.Join(append(errs, fmt.Errorf("%w in %s: %w", ErrList, network, err))...)
	}
	actual := slices.DeleteFunc(listed, func(r Route) bool {
		return !inside(network, r.Dst) || r.Dst.Masked() == self
	})
	upsert, remove := Diff(want, actual)

	for _, r := range upsert {
		if err := p.Replace(r); err != nil {
			errs = append(errs, replaceError(r, err))
			res.Failed++
			// The route in place points at whoever held the subnet before:
			// no route beats one to a host that may not be that node now.
			if old, ok := routeTo(actual, r.Dst); ok && prune && old.Gateway != r.Gateway {
				if err := p.Delete(old); err != nil {
					errs = append(errs, fmt.Errorf("removing stale route to %s: %w", old, err))
				} else {
					res.Removed++
				}
			}
			continue
		}
		res.Upserted++
	}
	if prune {
		for _, r := range remove {
			if err := p.Delete(r); err != nil {
				errs = append(errs, fmt.Errorf("removing route to %s: %w", r, err))
				continue
			}
			res.Removed++
		}
	}
	return res, errors.Join(errs...)
}

// ErrList is wrapped by Reconcile's error when the routes in place could
// not be read, so nothing was programmed.
var ErrList = errors.New("listing routes")

// routeTo finds the route to dst among routes.
func routeTo(routes []Route, dst netip.Prefix) (Route, bool) {
	i := slices.IndexFunc(routes, func(r Route) bool { return r.Dst.Masked() == dst.Masked() })
	if i < 0 {
		return Route{}, false
	}
	return routes[i], true
}

// inside reports whether dst is a subnet strictly inside network; a route
// to the whole network is not a per-node route.
func inside(network, dst netip.Prefix) bool {
	return dst.IsValid() && dst.Bits() > network.Bits() && network.Contains(dst.Addr())
}

func replaceError(r Route, err error) error {
	if errors.Is(err, syscall.ENETUNREACH) {
		return fmt.Errorf("route to %s: gateway not directly reachable; host-gw needs peers on one segment: %w", r, err)
	}
	return fmt.Errorf("replacing route to %s: %w", r, err)
}
