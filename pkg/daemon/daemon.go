// Package daemon is weft's node agent, `weft daemon`: it holds the node's
// subnet lease in etcd and keeps it alive, writes the subnet file, sets the
// node up as the plugin's first use would, keeps host-gw routes equal to the
// leases as nodes come and go, repairs weft's iptables rules on a period,
// and serves /healthz, /readyz and /metrics. `weft status` reports the same
// state for an operator.
//
// The daemon never exits because etcd is away; on a signal it stops and
// leaves routes, rules and the lease in place so that pods keep working.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/masq"
	"github.com/weft-cni/weft/pkg/metrics"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/nodelease"
	"github.com/weft-cni/weft/pkg/route"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

// Node sets the host up for the node's lease; LinuxNode does it with netlink.
type Node interface {
	// Ensure makes the bridge hold file's gateway address and turns on
	// forwarding; it is called on every resync and must be idempotent.
	Ensure(file *subnetfile.File) error
	// MarkReady records that the node is set up for file's lease, so that
	// the plugin's ADD trusts it and skips etcd (hostnet.MarkReady).
	MarkReady(file *subnetfile.File, now time.Time) error
}

// Locker takes the node lock, which the plugin holds while it changes the
// bridge, routes or rules (hostnet.LockNode); the daemon holds it for each
// change of its own, so that multi-step iptables repairs never interleave.
type Locker func(ctx context.Context) (unlock func(), err error)

// lockTimeout bounds a wait for the node lock; the change is retried at the
// next resync.
const lockTimeout = 30 * time.Second

// withLock runs fn under the node lock; false when the lock could not be had.
func withLock(ctx context.Context, lock Locker, log *slog.Logger, fn func()) bool {
	if lock == nil {
		fn()
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, lockTimeout)
	defer cancel()
	unlock, err := lock(ctx)
	if err != nil {
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			log.Warn("node lock not available; retrying at the next resync", "error", err)
		}
		return false
	}
	defer unlock()
	fn()
	return true
}

// Deps are the daemon's seams to the outside world.
type Deps struct {
	Store  Store
	Routes route.Programmer
	IPT    masq.IPTables
	Node   Node
	// Identity finds the node's public IP and interface (ResolveIdentity).
	Identity func() (nodelease.Identity, error)
	// HoldsAddr reports whether an identity's interface still holds its
	// public IP (HoldsAddr).
	HoldsAddr func(nodelease.Identity) (bool, error)
	// Overlay programs the vxlan backend and returns the routes to peers;
	// nil: the kernel's (LinuxOverlay).
	Overlay Overlay
	Lock    Locker           // nil: no node lock (tests)
	Clock   clockwork.Clock  // nil: the real clock
	Metrics *metrics.Metrics // nil: new metrics
	Log     *slog.Logger     // nil: slog.Default()
}

// Daemon is the node agent. Run runs it.
type Daemon struct {
	cfg      Config
	store    Store
	routes   route.Programmer
	ipt      masq.IPTables
	node     Node
	identity func() (nodelease.Identity, error)
	holds    func(nodelease.Identity) (bool, error)
	overlay  Overlay
	lock     Locker
	clock    clockwork.Clock
	metrics  *metrics.Metrics
	log      *slog.Logger

	state     state
	nodeKick  chan struct{} // re-check the node
	leaseKick chan struct{} // a new lease: reconcile routes and re-check the node
	ruleKick  chan struct{} // check the rules

	// node loop bookkeeping, for logging transitions only
	lastNodeErr, lastFileErr string
	lastIdentityErr          string
	// id is the identity the daemon resolved at start and advertises.
	id       nodelease.Identity
	wasReady bool
}

// New checks deps and returns a daemon for cfg.
func New(cfg *Config, deps Deps) (*Daemon, error) {
	if deps.Store == nil || deps.Routes == nil || deps.IPT == nil || deps.Node == nil || deps.Identity == nil || deps.HoldsAddr == nil {
		return nil, errors.New("daemon: Store, Routes, IPT, Node, Identity and HoldsAddr are required")
	}
	d := &Daemon{
		cfg: *cfg, store: deps.Store, routes: deps.Routes, ipt: deps.IPT, node: deps.Node,
		identity: deps.Identity, holds: deps.HoldsAddr, overlay: deps.Overlay, lock: deps.Lock, clock: deps.Clock, metrics: deps.Metrics, log: deps.Log,
		nodeKick: make(chan struct{}, 1), leaseKick: make(chan struct{}, 1), ruleKick: make(chan struct{}, 1),
	}
	if d.clock == nil {
		d.clock = clockwork.NewRealClock()
	}
	if d.metrics == nil {
		d.metrics = metrics.New()
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	return d, nil
}

// Metrics returns the daemon's metrics.
func (d *Daemon) Metrics() *metrics.Metrics { return d.metrics }

// Ready reports whether the node holds its lease, has its subnet file
// written and its rules in place, and if not, why.
func (d *Daemon) Ready() (bool, []string) { return d.state.readiness(d.clock.Now()) }

// Run runs the daemon until ctx ends, then returns nil, leaving routes,
// rules and the lease in place. It returns an error only for what a retry
// cannot fix: the health port cannot be bound.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop, err := d.serve(ctx)
	if err != nil {
		return err
	}
	defer stop()
	d.log.Info("weft daemon starting", "etcd_endpoints", d.cfg.EtcdEndpoints, "etcd_prefix", d.cfg.EtcdPrefix,
		"subnet_file", d.cfg.SubnetFile, "bridge", d.cfg.Bridge, "ip_masq", d.cfg.IPMasq)
	id, ok := d.resolveIdentity(ctx)
	if !ok {
		return nil
	}
	d.log.Info("node identity", "public_ip", id.PublicIP, "iface", id.Iface, "mtu", id.MTU)
	d.id = id

	k := d.newKeeper(id)
	overlay := d.overlay
	if overlay == nil {
		overlay = LinuxOverlay(id)
	}
	s := &syncer{store: d.store, routes: loggedProgrammer{d.routes, d.log}, overlay: overlay, clock: d.clock, log: d.log,
		metrics: d.metrics, state: &d.state, relist: d.cfg.Relist, lost: k.signalLost, synced: d.routesSynced, lock: d.lock,
		publicIPCIDR: d.cfg.PublicIPCIDR}
	r := &ruleKeeper{ipt: d.ipt, clock: d.clock, log: d.log, metrics: d.metrics, state: &d.state,
		ipMasq: d.cfg.IPMasq, period: d.cfg.IPTablesResync, kick: d.ruleKick, checked: d.kickNode, lock: d.lock}
	k.onLease = func(network *netconf.Config, own *lease.Lease) { d.onLease(network, own, id) }

	var wg sync.WaitGroup
	wg.Go(func() { k.run(ctx) })
	wg.Go(func() { s.run(ctx) })
	wg.Go(func() { r.run(ctx) })
	wg.Go(func() { d.runNode(ctx, s) })
	<-ctx.Done()
	wg.Wait()
	d.log.Info("weft daemon stopped; routes, rules and the lease stay in place")
	return nil
}

// resolveIdentity retries until the node's interface and address can be
// found (at boot they may come late); false when ctx ended first.
func (d *Daemon) resolveIdentity(ctx context.Context) (nodelease.Identity, bool) {
	bo := newBackoff(d.clock)
	for {
		id, err := d.identity()
		if err == nil {
			return id, true
		}
		d.log.Error("cannot find the node's interface and public IP; retrying", "error", err)
		if !bo.wait(ctx) {
			return nodelease.Identity{}, false
		}
	}
}

func (d *Daemon) newKeeper(id nodelease.Identity) *keeper {
	k := &keeper{store: d.store, clock: d.clock, log: d.log, metrics: d.metrics,
		publicIP: id.PublicIP, ttl: d.cfg.LeaseTTL, lost: make(chan struct{}, 1),
		onRenew: d.onRenew, onLost: d.onLeaseLost}
	if prev, err := subnetfile.Read(d.cfg.SubnetFile); err == nil {
		k.prefer, k.preferNetwork = prev.Lease(), prev.Network
		d.state.setPrevNetwork(prev.Network) // rules are kept even while etcd is away
		d.log.Info("subnet file found; asking for its subnet first", "subnet", k.prefer, "path", d.cfg.SubnetFile)
	}
	return k
}

// onLease records a newly acquired lease; the node loop then writes the
// subnet file and sets the node up for it.
func (d *Daemon) onLease(network *netconf.Config, own *lease.Lease, id nodelease.Identity) {
	file := subnetfile.ForLease(network.Network, own.Subnet, nodelease.PodMTU(network, id), d.cfg.IPMasq)
	d.state.setLease(network, own, file)
	held, expiry := d.state.leaseStatus(d.clock.Now())
	d.metrics.SetLease(held, expiry)
	attrs := []any{"subnet", own.Subnet, "public_ip", own.Attrs.PublicIP, "network", network.Network}
	if own.Reservation() {
		attrs = append(attrs, "reservation", true)
	} else {
		attrs = append(attrs, "expires", own.Expiration.Format(time.RFC3339), "lease_id", fmt.Sprintf("%x", int64(own.EtcdLease)))
	}
	d.log.Info("holding subnet lease", attrs...)
	if network.Backend.Defaulted {
		d.log.Warn(`the network config names no Backend: weft runs host-gw, flanneld would run udp; set "Backend": {"Type": "host-gw"} before flannel and weft nodes share the network`)
	}
	kick(d.ruleKick)
	kick(d.leaseKick)
}

func (d *Daemon) onRenew(expiry time.Time) {
	d.state.setExpiry(expiry)
	d.metrics.SetLease(true, expiry)
	d.log.Debug("subnet lease renewed", "expires", expiry.Format(time.RFC3339))
}

// onLeaseLost marks the lease not held until one is acquired again: the
// node is not ready (its subnet may go to another node meanwhile) and the
// bridge is no longer marked fresh.
func (d *Daemon) onLeaseLost() {
	d.state.loseLease()
	d.metrics.SetLease(false, time.Time{})
	d.kickNode()
}

func (d *Daemon) routesSynced(ok bool) {
	if d.state.setRoutesSynced(ok) {
		d.kickNode()
	}
}

func (d *Daemon) kickNode() { kick(d.nodeKick) }

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// runNode keeps the local side current every route resync period and
// whenever another loop has news: subnet file, bridge, forwarding, routes
// against the known leases, and the bridge's ready mark.
func (d *Daemon) runNode(ctx context.Context, s *syncer) {
	t := d.clock.NewTicker(d.cfg.RouteResync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
			s.reconcile(ctx)
		case <-d.leaseKick:
			s.reconcile(ctx)
		case <-d.nodeKick:
		}
		d.syncNode(ctx)
	}
}

func (d *Daemon) syncNode(ctx context.Context) {
	d.checkIdentity()
	snap := d.state.get()
	if snap.own == nil {
		d.updateReady(snap)
		return
	}
	withLock(ctx, d.lock, d.log, func() {
		fileErr := subnetfile.Write(d.cfg.SubnetFile, snap.file)
		d.state.setFileErr(fileErr)
		d.lastFileErr = d.transition("subnet file", d.lastFileErr, fileErr, "path", d.cfg.SubnetFile)
		if fileErr == nil { // the plugin must not find a bridge before the file
			nodeErr := d.node.Ensure(snap.file)
			d.state.setNodeErr(nodeErr)
			d.lastNodeErr = d.transition("node setup", d.lastNodeErr, nodeErr, "bridge", d.cfg.Bridge)
		}
		now := d.clock.Now()
		if exp, soon := d.state.expiringSoon(now, d.cfg.RenewMargin); soon {
			d.log.Warn("the subnet lease has not been renewed and expires soon; is etcd reachable?",
				"subnet", snap.own.Subnet, "expires", exp.Format(time.RFC3339))
		}
		held, expiry := d.state.leaseStatus(now)
		d.metrics.SetLease(held, expiry)
		d.updateReady(snap)
	})
}

// checkIdentity checks, when the node's address comes from the interface
// (not --public-ip, which may be an address NAT maps to the node), that
// the interface the daemon advertises still holds the address: one that
// changed under the daemon (DHCP, an operator) leaves peers routing this
// node's pods to the old one, which the daemon keeps advertising until it
// restarts (as flanneld does). The node is then not ready, and the log
// says so, rather than failing silently. Another first address on the
// interface, or an earlier --iface candidate that gained one, changes
// nothing: peers still reach the advertised address.
func (d *Daemon) checkIdentity() {
	if d.cfg.PublicIP.IsValid() {
		return
	}
	var err error
	if held, holdsErr := d.holds(d.id); !held {
		// Where the node's address went, for the message.
		now := fmt.Sprintf("%s no longer holds it", d.id.Iface)
		if cur, resolveErr := d.identity(); resolveErr == nil {
			now = fmt.Sprintf("%s now has %s", cur.Iface, cur.PublicIP)
		} else if holdsErr != nil {
			now = holdsErr.Error()
		}
		err = fmt.Errorf("%s, but this daemon advertises %s, where peers route this node's pods; restart the daemon to advertise the node's address", now, d.id.PublicIP)
	}
	d.state.setIdentityErr(err)
	d.lastIdentityErr = d.transition("node address check", d.lastIdentityErr, err, "public_ip", d.id.PublicIP)
}

// updateReady publishes readiness and, when ready, marks the bridge.
func (d *Daemon) updateReady(snap snapshot) {
	ready, why := d.Ready()
	d.metrics.SetReady(ready)
	if ready {
		if err := d.node.MarkReady(snap.file, d.clock.Now()); err != nil {
			d.metrics.ReconcileError(metrics.ErrNode)
			d.log.Warn("marking the bridge ready failed", "error", err)
		}
	}
	switch {
	case ready && !d.wasReady:
		d.log.Info("node ready", "subnet", snap.own.Subnet)
	case !ready && d.wasReady:
		d.log.Warn("node not ready", "reasons", why)
	}
	d.wasReady = ready
}

// transition logs err when it differs from the last one, and its clearing.
func (d *Daemon) transition(what, last string, err error, attrs ...any) string {
	switch {
	case err != nil && err.Error() != last:
		d.metrics.ReconcileError(metrics.ErrNode)
		d.log.Error(what+" failed; retrying every resync", append(attrs, "error", err)...)
		return err.Error()
	case err != nil:
		d.metrics.ReconcileError(metrics.ErrNode)
		return last
	case last != "":
		d.log.Info(what+" repaired", attrs...)
	}
	return ""
}
