package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/metrics"
	"github.com/weft-cni/weft/pkg/netconf"
	"github.com/weft-cni/weft/pkg/nodelease"
)

// acquireTimeout bounds one attempt to acquire the lease; an unreachable
// etcd makes the attempt fail and the keeper retry.
const acquireTimeout = 15 * time.Second

// keeper acquires the node's lease and keeps it alive with one etcd lease
// and its keep-alive stream. It never gives up: etcd being away makes it
// retry, and a lease that expired or vanished meanwhile is acquired again,
// the same subnet first.
type keeper struct {
	store   Store
	clock   clockwork.Clock
	log     *slog.Logger
	metrics *metrics.Metrics

	publicIP netip.Addr
	ttl      time.Duration
	// prefer is the subnet to ask for first: the subnet file's at start,
	// then the last one held.
	prefer netip.Prefix
	// preferNetwork is the network prefer was leased in; prefer is used
	// only while etcd's network config is the same.
	preferNetwork netip.Prefix

	// lost is signalled when the node's key vanished or was rewritten by
	// someone else while its etcd lease lives on; lostRev is the latest
	// etcd revision at which that was seen.
	lost    chan struct{}
	lostMu  sync.Mutex
	lostRev int64
	// onLease is called with each lease acquired, onRenew with each new
	// expiry; both on the keeper's goroutine.
	onLease func(*netconf.Config, *lease.Lease)
	onRenew func(time.Time)
	// onLost, when set, is called when the lease is known lost (its key
	// gone or taken, its etcd lease ended), before acquiring again.
	onLost func()
}

// lostLease reports the lease lost, if anyone listens.
func (k *keeper) lostLease() {
	if k.onLost != nil {
		k.onLost()
	}
}

// signalLost tells the keeper that at etcd revision rev its key was seen
// gone or held by another node, so that it acquires again; it never blocks.
func (k *keeper) signalLost(rev int64) {
	k.lostMu.Lock()
	k.lostRev = max(k.lostRev, rev)
	k.lostMu.Unlock()
	select {
	case k.lost <- struct{}{}:
	default:
	}
}

// lostNow reports whether a loss signalled is about own: seen at or after
// the revision own was written or listed at. An older one is about a
// lease the keeper gave up already (its keep-alive ended, and the watch
// reported the key's deletion while the keeper acquired again); acting on
// it would drop the lease just acquired.
func (k *keeper) lostNow(own *lease.Lease) bool {
	k.lostMu.Lock()
	defer k.lostMu.Unlock()
	return k.lostRev >= own.ModRevision
}

func (k *keeper) run(ctx context.Context) {
	bo := newBackoff(k.clock)
	for ctx.Err() == nil {
		network, own, err := k.acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			k.metrics.ReconcileError(metrics.ErrLease)
			k.log.Warn("acquiring the subnet lease failed; retrying", "error", err, "prefer", k.prefer)
			bo.wait(ctx)
			continue
		}
		bo.reset()
		k.prefer, k.preferNetwork = own.Subnet, network.Network
		k.metrics.LeaseAcquired()
		k.onLease(network, own)
		if !k.hold(ctx, own) {
			sleep(ctx, k.clock, minBackoff) // the keep-alive could not start: do not spin
		}
	}
}

// acquire reads the network config and reuses or acquires the node's lease:
// its own by public IP, else the subnet it held last (the subnet file's at
// start) if that is free, else a free one. As flanneld, it never takes a
// subnet that another node holds, even one this node held under a former
// address: two nodes on one subnet is worse than a node renumbered.
func (k *keeper) acquire(ctx context.Context) (*netconf.Config, *lease.Lease, error) {
	ctx, cancel := context.WithTimeout(ctx, acquireTimeout)
	defer cancel()
	network, err := k.store.NetworkConfig(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := supported(network); err != nil {
		return nil, nil, err
	}
	attrs, err := nodelease.LeaseAttrs(network, k.publicIP)
	if err != nil {
		return nil, nil, err
	}
	prefer := k.prefer
	if !prefer.IsValid() || k.preferNetwork != network.Network || !network.Contains(prefer) {
		prefer = netip.Prefix{}
	}
	own, err := k.store.Acquire(ctx, network, attrs, lease.AcquireOptions{TTL: k.ttl, Prefer: prefer})
	if err != nil {
		return nil, nil, fmt.Errorf("acquiring a subnet of %s for %s: %w", network.Network, k.publicIP, err)
	}
	if prefer.IsValid() && own.Subnet != prefer {
		k.log.Warn("the subnet this node held is not available to it any more (leased to another node, outside the network config, or its key unreadable; see the lease log); pods still using it need restarting",
			"previous_subnet", prefer, "subnet", own.Subnet, "public_ip", k.publicIP)
	}
	return network, own, nil
}

// supported reports whether the daemon can program the network's backend.
func supported(network *netconf.Config) error {
	switch network.Backend.Type {
	case netconf.BackendHostGW, netconf.BackendVXLAN:
		return nil
	default:
		return fmt.Errorf("backend %q of network %s: the weft daemon programs host-gw and vxlan only", network.Backend.Type, network.Network)
	}
}

// hold keeps own until it is lost or ctx ends. It returns false when the
// keep-alive could not even start. A reservation has no etcd lease to keep
// alive; it is held until its key vanishes or changes.
func (k *keeper) hold(ctx context.Context, own *lease.Lease) bool {
	var renewals <-chan time.Time // nil for a reservation: never ready
	if !own.Reservation() {
		kctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var err error
		renewals, err = k.store.KeepAlive(kctx, own.EtcdLease, own.Expiration)
		if err != nil {
			k.metrics.ReconcileError(metrics.ErrLease)
			k.log.Warn("starting the keep-alive of the subnet lease failed; acquiring again", "subnet", own.Subnet, "error", err)
			return false
		}
	}
	for {
		select {
		case <-ctx.Done():
			return true
		case <-k.lost:
			if !k.lostNow(own) {
				continue
			}
			k.log.Warn("the node's subnet key vanished or changed in etcd; acquiring again",
				"subnet", own.Subnet, "reservation", own.Reservation())
			k.lostLease()
			return true
		case exp, ok := <-renewals:
			if !ok {
				if ctx.Err() == nil {
					k.metrics.ReconcileError(metrics.ErrLease)
					k.log.Warn("the keep-alive of the subnet lease ended (expired, revoked, or etcd unreachable for a whole TTL); acquiring again",
						"subnet", own.Subnet, "lease_id", fmt.Sprintf("%x", int64(own.EtcdLease)))
					k.lostLease()
				}
				return true
			}
			k.onRenew(exp)
		}
	}
}
