package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/metrics"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/route"
	"github.com/weft-cni/weft/pkg/vxlan"
)

// listTimeout bounds one listing of the leases.
const listTimeout = 30 * time.Second

// syncer follows the leases in etcd (list, then watch from the listed
// revision, list again on compaction, watch loss and every relist period)
// and keeps the routes to peer subnets equal to what they imply. Every
// reconcile is the full desired-versus-kernel diff with pruning, so routes
// of leases that vanished, even while the daemon was down, are removed.
type syncer struct {
	store   Store
	routes  route.Programmer
	overlay Overlay
	clock   clockwork.Clock
	log     *slog.Logger
	metrics *metrics.Metrics
	state   *state
	relist  time.Duration
	// lost tells the keeper the node's own key was seen vanished or taken
	// at an etcd revision.
	lost func(rev int64)
	// synced is called after each reconcile that ran against listed leases:
	// ok is false when it could not program anything (the route table could
	// not be read, the vxlan device could not be set up).
	synced func(ok bool)
	// lock is the node lock the plugin also takes; nil for none.
	lock Locker

	mu      sync.Mutex
	leases  map[netip.Prefix]lease.Lease
	listed  bool
	lastErr string // last reconcile error, logged once
	// lastConfigErr is checkConfig's last finding, logged once.
	lastConfigErr string
	warnedIP      map[netip.Prefix]bool
	// publicIPCIDR, when valid, is where peers' PublicIPs must lie; other
	// leases are ignored with a warning rather than routed.
	publicIPCIDR netip.Prefix
}

func (s *syncer) run(ctx context.Context) {
	bo := newBackoff(s.clock)
	for ctx.Err() == nil {
		rev, err := s.fullSync(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.metrics.ReconcileError(metrics.ErrList)
			s.log.Warn("listing subnet leases failed; routes stay as they are, retrying", "error", err)
			bo.wait(ctx)
			continue
		}
		s.checkConfig(ctx)
		reason, err := s.watch(ctx, rev)
		if ctx.Err() != nil {
			return
		}
		s.metrics.WatchRestart(reason)
		if reason == metrics.WatchError {
			s.log.Warn("watching subnet leases failed; listing them again", "error", err, "revision", rev)
			bo.wait(ctx)
			continue
		}
		bo.reset()
		s.log.Debug("listing subnet leases again", "reason", reason, "revision", rev)
	}
}

// fullSync lists every lease, replaces the known set and reconciles.
func (s *syncer) fullSync(ctx context.Context) (int64, error) {
	start := time.Now()
	lctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	leases, rev, err := s.store.ListWithoutExpiry(lctx)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leases = make(map[netip.Prefix]lease.Lease, len(leases))
	for _, l := range leases {
		s.leases[l.Subnet] = l
	}
	s.listed = true
	if own := s.state.get().own; own != nil && rev >= own.ModRevision {
		if l, ok := s.leases[own.Subnet]; !ok || l.Attrs.PublicIP != own.Attrs.PublicIP {
			s.lost(rev)
		}
	}
	s.reconcileLocked(ctx)
	s.metrics.FullSync(time.Since(start))
	return rev, nil
}

// checkConfig compares, at each full sync, etcd's network config with the
// one the node's lease was acquired under. The daemon reads it only then
// (as flanneld), so a changed config (a Network widened, another backend)
// is applied at its next restart; until then the node is not ready and the
// log says so, rather than leaving leases of the new range unrouted in
// silence. A failed read changes nothing: the list just succeeded.
func (s *syncer) checkConfig(ctx context.Context) {
	running := s.state.get().network
	if running == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	nc, err := s.store.NetworkConfig(ctx)
	if err != nil {
		return
	}
	var cfgErr error
	if !sameNetwork(nc, running) {
		cfgErr = fmt.Errorf("etcd now says %s, this daemon runs %s since it acquired its lease; restart the daemon to apply it",
			describeNetwork(nc), describeNetwork(running))
	}
	if !s.state.setConfigErr(running, cfgErr) {
		return // a lease acquired meanwhile, under the config then in etcd
	}
	switch {
	case cfgErr != nil && cfgErr.Error() != s.lastConfigErr:
		s.log.Error("the network config changed in etcd", "error", cfgErr)
	case cfgErr == nil && s.lastConfigErr != "":
		s.log.Info("the network config in etcd is the one this daemon runs again")
	}
	s.lastConfigErr = ""
	if cfgErr != nil {
		s.lastConfigErr = cfgErr.Error()
	}
}

// sameNetwork reports whether two configs make the same network for the
// node: whether the backend was named or defaulted makes no difference,
// nor do vxlan's settings (VNI, port, DirectRouting) under host-gw.
func sameNetwork(a, b *netconf.Config) bool {
	return nodeView(*a) == nodeView(*b)
}

func nodeView(c netconf.Config) netconf.Config {
	c.Backend.Defaulted = false
	if c.Backend.Type != netconf.BackendVXLAN {
		c.Backend.VNI, c.Backend.Port, c.Backend.DirectRouting = 0, 0, false
	}
	return c
}

// describeNetwork names what of a network config matters to a node.
func describeNetwork(c *netconf.Config) string {
	b := c.Backend
	d := fmt.Sprintf("Network %s, SubnetLen %d, SubnetMin %s, SubnetMax %s, backend %s", c.Network, c.SubnetLen, c.SubnetMin, c.SubnetMax, b.Type)
	if b.Type == netconf.BackendVXLAN {
		d += fmt.Sprintf(" (VNI %d, port %d, DirectRouting %t, GBP %t)", b.VNI, b.Port, b.DirectRouting, b.GBP)
	}
	if b.MTU != 0 {
		d += fmt.Sprintf(", MTU %d", b.MTU)
	}
	return d
}

// watch follows changes from rev until the relist period passes, the watch
// fails or ctx ends, and says why it stopped.
func (s *syncer) watch(ctx context.Context, rev int64) (string, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var periodic atomic.Bool
	timer := s.clock.AfterFunc(s.relist, func() {
		periodic.Store(true)
		cancel()
	})
	defer timer.Stop()
	err := s.store.Watch(wctx, rev, func(events []lease.Event) { s.apply(ctx, events) })
	switch {
	case periodic.Load():
		return metrics.WatchPeriodic, nil
	case errors.Is(err, lease.ErrCompacted):
		return metrics.WatchCompacted, err
	default:
		return metrics.WatchError, err
	}
}

// apply updates the known leases with a batch of events and reconciles.
func (s *syncer) apply(ctx context.Context, events []lease.Event) {
	own := s.state.get().own
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range events {
		l := ev.Lease
		mine := own != nil && l.Subnet == own.Subnet && l.ModRevision > own.ModRevision
		switch ev.Type {
		case lease.Added:
			s.leases[l.Subnet] = l
			s.log.Debug("subnet lease added", "subnet", l.Subnet, "public_ip", l.Attrs.PublicIP)
			if mine && l.Attrs.PublicIP != own.Attrs.PublicIP {
				s.lost(l.ModRevision)
			}
		case lease.Removed:
			delete(s.leases, l.Subnet)
			s.log.Debug("subnet lease removed", "subnet", l.Subnet)
			if mine {
				s.lost(l.ModRevision)
			}
		}
	}
	s.reconcileLocked(ctx)
}

// reconcile checks the kernel's routes against the known leases, without
// asking etcd: the periodic repair of routes someone else removed.
func (s *syncer) reconcile(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reconcileLocked(ctx)
}

func (s *syncer) reconcileLocked(ctx context.Context) {
	snap := s.state.get()
	if !s.listed || snap.own == nil {
		return
	}
	peers := s.peersLocked(snap.own)
	desired := route.HostGW(peers, snap.own.Subnet)
	var (
		res route.Result
		err error
	)
	var devErr error
	if !withLock(ctx, s.lock, s.log, func() {
		var overlayErr error
		if snap.network.Backend.Type == netconf.BackendVXLAN {
			desired, overlayErr = s.overlay(snap.network, snap.own, s.leaseListLocked(), true)
			if errors.Is(overlayErr, vxlan.ErrDevice) {
				devErr = overlayErr // routes stay as they are
				return
			}
		}
		res, err = route.Reconcile(s.routes, snap.network.Network, snap.own.Subnet, desired, true)
		err = errors.Join(overlayErr, err)
	}) {
		return
	}
	if devErr != nil {
		s.metrics.ReconcileError(metrics.ErrRoutes)
		if msg := devErr.Error(); msg != s.lastErr {
			s.log.Error("the vxlan device could not be set up; retrying every resync", "error", devErr)
			s.lastErr = msg
		}
		s.synced(false)
		return
	}
	s.metrics.SetPeers(len(peers))
	s.metrics.RouteChanges(res.Upserted, res.Removed)
	if !errors.Is(err, route.ErrList) { // else what is in place is unknown
		s.metrics.SetRoutes(max(0, len(desired)-res.Failed))
	}
	s.metrics.SetUnreachablePeers(unreachable(err))
	if err != nil {
		s.metrics.ReconcileError(metrics.ErrRoutes)
		if msg := err.Error(); msg != s.lastErr {
			s.log.Warn("some routes could not be programmed; retrying every resync", "error", err)
			s.lastErr = msg
		}
	} else if s.lastErr != "" {
		s.log.Info("routes programmed again")
		s.lastErr = ""
	}
	// Peers a route could not reach leave the node ready (one node off the
	// segment must not take every node out); a route table that cannot be
	// read does not.
	s.synced(!errors.Is(err, route.ErrList))
}

// peersLocked returns the other nodes' leases, sorted by subnet. A lease
// with this node's public IP but another subnet is left out: a route to it
// would point back at this node.
func (s *syncer) peersLocked(own *lease.Lease) []route.Peer {
	peers := make([]route.Peer, 0, len(s.leases))
	for subnet, l := range s.leases {
		if subnet == own.Subnet {
			continue
		}
		if l.Attrs.PublicIP == own.Attrs.PublicIP {
			s.warnOnce(subnet, "ignoring another lease of this node's public IP", l.Attrs.PublicIP)
			continue
		}
		if !s.admitted(l) {
			continue
		}
		peers = append(peers, route.Peer{Subnet: subnet, PublicIP: l.Attrs.PublicIP})
	}
	slices.SortFunc(peers, func(a, b route.Peer) int { return a.Subnet.Addr().Compare(b.Subnet.Addr()) })
	return peers
}

// leaseListLocked returns the known leases.
func (s *syncer) leaseListLocked() []lease.Lease {
	out := make([]lease.Lease, 0, len(s.leases))
	for _, l := range s.leases {
		if s.admitted(l) {
			out = append(out, l)
		}
	}
	return out
}

// admitted applies --public-ip-cidr: a lease whose PublicIP lies outside it
// is ignored with a warning (a forged or misconfigured lease must not pull
// pod traffic to an arbitrary address).
func (s *syncer) admitted(l lease.Lease) bool {
	if l.PublicIPIn(s.publicIPCIDR) {
		return true
	}
	s.warnOnce(l.Subnet, "ignoring a lease whose public IP is outside --public-ip-cidr "+s.publicIPCIDR.String(), l.Attrs.PublicIP)
	return false
}

// warnOnce logs msg once per subnet.
func (s *syncer) warnOnce(subnet netip.Prefix, msg string, ip netip.Addr) {
	if s.warnedIP[subnet] {
		return
	}
	s.log.Warn(msg, "subnet", subnet, "public_ip", ip)
	if s.warnedIP == nil {
		s.warnedIP = map[netip.Prefix]bool{}
	}
	s.warnedIP[subnet] = true
}

// unreachable counts the route failures whose gateway is not directly
// reachable (a host-gw peer on another segment).
func unreachable(err error) int {
	n := 0
	for _, e := range leaves(err) {
		if errors.Is(e, syscall.ENETUNREACH) {
			n++
		}
	}
	return n
}

// leaves flattens the errors.Join trees in err into the errors joined,
// however deeply (the overlay's and Reconcile's joins are joined again).
func leaves(err error) []error {
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, leaves(e)...)
	}
	return out
}

// loggedProgrammer logs each change it makes, so operators see routes follow nodes.
type loggedProgrammer struct {
	route.Programmer
	log *slog.Logger
}

func (p loggedProgrammer) Replace(r route.Route) error {
	err := p.Programmer.Replace(r)
	if err == nil {
		p.log.Info("route programmed", "dst", r.Dst, "gateway", r.Gateway)
	}
	return err
}

func (p loggedProgrammer) Delete(r route.Route) error {
	err := p.Programmer.Delete(r)
	if err == nil {
		p.log.Info("route removed", "dst", r.Dst, "gateway", r.Gateway)
	}
	return err
}
