package lease

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-cni/weft/pkg/netconf"
)

// AcquireOptions tune Acquire.
type AcquireOptions struct {
	// TTL binds a newly created key to an etcd lease of this length, which
	// the caller keeps alive by Lease.EtcdLease. 0 creates a permanent
	// reservation. An existing key keeps its kind: a reservation stays one,
	// and a leased key keeps its etcd lease while that is alive.
	TTL time.Duration
	// Prefer is tried first when the node holds no lease, typically the
	// subnet from the node's subnet file, so a node gets its subnet back.
	Prefer netip.Prefix
}

// errLostRace makes Acquire re-list and try again.
var errLostRace = errors.New("lost a race for a subnet key")

// revokeTimeout bounds the cleanup of an etcd lease Acquire granted but did not use.
const revokeTimeout = 5 * time.Second

// Acquire returns the node's lease in the network cfg, creating one if needed
// (DESIGN invariants 1 and 2):
//   - leases whose PublicIP is attrs.PublicIP but that cfg does not contain
//     (the config changed) are deleted, compare-and-set on ModRevision;
//   - a lease in the network whose PublicIP is attrs.PublicIP is reused, its
//     value rewritten (compare-and-set on ModRevision) if attrs differ,
//     keeping what the old value carried beyond attrs (Attrs.WithUnknownFrom);
//   - else opt.Prefer, if cfg contains it and nobody holds it;
//   - else a random free subnet of cfg, created only if its key is absent.
//
// A lost race re-lists and tries again, a bounded number of times; then the
// error wraps ErrConflict. A full network gives an error wrapping ErrNoFreeSubnet.
func (s *Store) Acquire(ctx context.Context, cfg *netconf.Config, attrs Attrs, opt AcquireOptions) (*Lease, error) {
	if cfg == nil {
		return nil, errors.New("acquiring a subnet: no network config")
	}
	if opt.TTL < 0 {
		return nil, fmt.Errorf("acquiring a subnet: negative TTL %s", opt.TTL)
	}
	value, err := attrs.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("acquiring a subnet: %w", err)
	}
	a := &acquisition{s: s, cfg: cfg, attrs: attrs, value: string(value), opt: opt}
	defer a.revokeUnused(ctx)
	attempts := min(cfg.Count(), 50) + 5
	for range attempts {
		l, err := a.try(ctx)
		if !errors.Is(err, errLostRace) {
			return l, err
		}
	}
	return nil, fmt.Errorf("acquiring a subnet in %s for %s: lost %d races with other writers: %w",
		cfg.Network, attrs.PublicIP, attempts, ErrConflict)
}

// Acquirable reports, writing nothing, whether Acquire would give the node
// with publicIP a lease in cfg now: it holds one that fits, or a subnet is
// free, counted as Acquire counts (keys that do not decode and keys of
// another length hold theirs; the node's own keys that cfg does not allow,
// which Acquire deletes, hold nothing). A full network gives an error
// wrapping ErrNoFreeSubnet.
func (s *Store) Acquirable(ctx context.Context, cfg *netconf.Config, publicIP netip.Addr) error {
	listed, err := s.listAll(ctx)
	if err != nil {
		return fmt.Errorf("checking for a free subnet: %w", err)
	}
	if Own(listed.leases, publicIP, cfg) != nil {
		return nil
	}
	others := slices.DeleteFunc(listed.leases, func(l Lease) bool { return l.Attrs.PublicIP == publicIP })
	a := &acquisition{s: s, cfg: cfg, attrs: Attrs{PublicIP: publicIP}}
	_, err = a.pick(others, listed.unreadable)
	return err
}

// acquisition is the state of one Acquire call.
type acquisition struct {
	s     *Store
	cfg   *netconf.Config
	attrs Attrs
	value string
	opt   AcquireOptions

	grant     clientv3.LeaseID // granted etcd lease, reused across attempts
	grantExp  time.Time
	grantUsed bool
}

func (a *acquisition) try(ctx context.Context) (*Lease, error) {
	listed, err := a.s.listAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquiring a subnet: %w", err)
	}
	leases, err := a.dropMisfits(ctx, listed.leases)
	if err != nil {
		return nil, err
	}
	if own := a.own(leases); own != nil {
		return a.reuse(ctx, *own)
	}
	subnet, err := a.pick(leases, listed.unreadable)
	if err != nil {
		return nil, err
	}
	return a.create(ctx, subnet)
}

// own returns the node's oldest lease in the network, or nil.
func (a *acquisition) own(leases []Lease) *Lease {
	return Own(leases, a.attrs.PublicIP, a.cfg)
}

// dropMisfits deletes the node's leases that the network config no longer
// allows (SubnetLen, SubnetMin or SubnetMax changed, or another Network), as
// flanneld does, and returns leases without them. Each delete compares the
// ModRevision listed: a key written since is left alone and Acquire lists
// again.
func (a *acquisition) dropMisfits(ctx context.Context, leases []Lease) ([]Lease, error) {
	kept := make([]Lease, 0, len(leases))
	for i := range leases {
		l := &leases[i]
		if l.Attrs.PublicIP != a.attrs.PublicIP || a.cfg.Contains(l.Subnet) {
			kept = append(kept, *l)
			continue
		}
		if err := a.dropMisfit(ctx, l, leases); err != nil {
			return nil, err
		}
	}
	return kept, nil
}

// dropMisfit deletes the misfit l and revokes its etcd lease unless another
// listed key is bound to it (revoking would delete that key too).
func (a *acquisition) dropMisfit(ctx context.Context, l *Lease, leases []Lease) error {
	deleted, err := a.s.deleteUnchanged(ctx, l)
	if errors.Is(err, ErrConflict) {
		return errLostRace
	}
	if err != nil {
		return fmt.Errorf("deleting lease of %s, which does not fit network %s: %w", l.Subnet, a.cfg.Network, err)
	}
	if !deleted {
		return nil
	}
	a.s.log.Warn("deleted this node's lease that does not fit the network config; pods still on it need restarting",
		"subnet", l.Subnet, "key", a.s.keyOf(l), "public_ip", l.Attrs.PublicIP, "network", a.cfg.Network,
		"subnet_len", a.cfg.SubnetLen, "subnet_min", a.cfg.SubnetMin, "subnet_max", a.cfg.SubnetMax)
	if slices.ContainsFunc(leases, func(o Lease) bool { return o.EtcdLease == l.EtcdLease && o.key != l.key }) {
		return nil
	}
	if err := a.s.revoke(ctx, l); err != nil {
		// The key is gone; the etcd lease only runs out on its own.
		a.s.log.Warn("revoking the etcd lease of a deleted lease", "subnet", l.Subnet, "error", err)
	}
	return nil
}

// reuse keeps the node's existing key, rewriting its value if needed and
// keeping its kind (reservation or bound to its etcd lease).
func (a *acquisition) reuse(ctx context.Context, own Lease) (*Lease, error) {
	var opts []clientv3.OpOption
	if own.EtcdLease != 0 {
		exp, alive, err := a.s.expiration(ctx, own.EtcdLease)
		if err != nil {
			return nil, fmt.Errorf("reusing lease of %s: %w", own.Subnet, err)
		}
		if !alive {
			return nil, errLostRace // the key goes with its etcd lease; list again
		}
		own.Expiration = exp
		opts = append(opts, clientv3.WithLease(own.EtcdLease))
	}
	// Keep what flannel wrote that weft does not set (PublicIPv6,
	// BackendV6Data): flannel peers that decode it would otherwise skip us.
	attrs := a.attrs.WithUnknownFrom(own.Attrs)
	if own.Attrs.Equal(attrs) {
		return &own, nil
	}
	value, err := attrs.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("updating lease %s: %w", own.Subnet, err)
	}
	key := a.s.keyOf(&own)
	resp, err := a.s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", own.ModRevision)).
		Then(clientv3.OpPut(key, string(value), opts...)).
		Commit()
	if err != nil {
		return nil, fmt.Errorf("updating lease %s: %w", key, err)
	}
	if !resp.Succeeded {
		return nil, errLostRace
	}
	own.Attrs = attrs
	own.ModRevision = resp.Header.Revision
	return &own, nil
}

// pick chooses the subnet to create: opt.Prefer if free, else a random free
// one. The subnets of unreadable keys are held too.
func (a *acquisition) pick(leases []Lease, unreadable []unreadableKey) (netip.Prefix, error) {
	held := newHeldSet(a.cfg.SubnetLen)
	for _, l := range leases {
		held.add(l.Subnet)
	}
	for _, u := range unreadable {
		held.add(u.subnet)
	}
	if p := a.opt.Prefer; p.IsValid() && a.cfg.Contains(p) {
		if !held.overlaps(p) {
			return p, nil
		}
		a.warnUnreadable(p, unreadable)
	}
	var chosen netip.Prefix
	free := 0
	for p := range a.cfg.Subnets() {
		if held.overlaps(p) {
			continue
		}
		free++
		if rand.IntN(free) == 0 { // reservoir sampling: uniform over free subnets
			chosen = p
		}
	}
	if free == 0 {
		return netip.Prefix{}, fmt.Errorf("acquiring a subnet for %s: all %d subnets /%d of network %s (%s..%s) are held%s: %w",
			a.attrs.PublicIP, a.cfg.Count(), a.cfg.SubnetLen, a.cfg.Network, a.cfg.SubnetMin, a.cfg.SubnetMax,
			describeUnreadable(unreadable), ErrNoFreeSubnet)
	}
	return chosen, nil
}

// warnUnreadable says when the preferred subnet p is passed over because of
// an unreadable key, which an operator can fix.
func (a *acquisition) warnUnreadable(p netip.Prefix, unreadable []unreadableKey) {
	for _, u := range unreadable {
		if u.subnet.Overlaps(p) {
			a.s.log.Warn("the preferred subnet is held by a key whose value cannot be decoded; taking another: fix or delete the key",
				"subnet", p, "key", u.key)
		}
	}
}

// describeUnreadable names the unreadable keys for an error, if any.
func describeUnreadable(unreadable []unreadableKey) string {
	if len(unreadable) == 0 {
		return ""
	}
	keys := make([]string, len(unreadable))
	for i, u := range unreadable {
		keys[i] = u.key
	}
	return fmt.Sprintf(" (%d of them by keys whose value cannot be decoded: %s)", len(keys), strings.Join(keys, ", "))
}

// create writes the key of subnet if it does not exist, then checks, in the
// same transaction's snapshot, that no older lease of this node appeared
// meanwhile (a plugin and a daemon acquiring at once); the younger gives way.
func (a *acquisition) create(ctx context.Context, subnet netip.Prefix) (*Lease, error) {
	l := Lease{Subnet: subnet, Attrs: a.attrs, key: SubnetKey(a.s.prefix, subnet)}
	var opts []clientv3.OpOption
	if a.opt.TTL > 0 {
		if err := a.grantLease(ctx); err != nil {
			return nil, err
		}
		l.EtcdLease, l.Expiration = a.grant, a.grantExp
		opts = append(opts, clientv3.WithLease(a.grant))
	}
	resp, err := a.s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(l.key), "=", 0)).
		Then(clientv3.OpPut(l.key, a.value, opts...), clientv3.OpGet(subnetsDir(a.s.prefix), clientv3.WithPrefix())).
		Commit()
	if err != nil {
		return nil, fmt.Errorf("creating lease %s: %w", l.key, err)
	}
	if !resp.Succeeded {
		return nil, errLostRace
	}
	a.grantUsed = a.opt.TTL > 0
	l.ModRevision, l.createRevision = resp.Header.Revision, resp.Header.Revision
	snapshot := a.s.decodeAll(resp.Responses[1].GetResponseRange().GetKvs()).leases
	if first := a.own(snapshot); first == nil || first.key == l.key {
		return &l, nil
	}
	if err := a.s.Release(ctx, &Lease{ModRevision: l.ModRevision, key: l.key}); err != nil {
		return nil, fmt.Errorf("giving up duplicate lease %s: %w", l.key, err)
	}
	a.grantUsed = false
	return nil, errLostRace
}

// grantLease grants the etcd lease for a new key, once per Acquire.
func (a *acquisition) grantLease(ctx context.Context) error {
	if a.grant != 0 {
		return nil
	}
	secs := int64((a.opt.TTL + time.Second - 1) / time.Second)
	start := time.Now()
	resp, err := a.s.cli.Grant(ctx, secs)
	if err != nil {
		return fmt.Errorf("granting an etcd lease of %s: %w", a.opt.TTL, err)
	}
	a.grant, a.grantExp = resp.ID, start.Add(time.Duration(resp.TTL)*time.Second)
	return nil
}

// revokeUnused revokes the granted etcd lease if no key ended up bound to it.
func (a *acquisition) revokeUnused(ctx context.Context) {
	if a.grant == 0 || a.grantUsed {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
	defer cancel()
	if _, err := a.s.cli.Revoke(ctx, a.grant); err != nil {
		a.s.log.Warn("revoking unused etcd lease", "lease_id", fmt.Sprintf("%x", int64(a.grant)), "error", err)
	}
}

// heldSet answers whether a candidate subnet overlaps a held one.
type heldSet struct {
	subnetLen int
	exact     map[netip.Prefix]bool // held subnets of the config's length
	other     []netip.Prefix        // held subnets of another length (config changed)
}

func newHeldSet(subnetLen int) heldSet {
	return heldSet{subnetLen: subnetLen, exact: map[netip.Prefix]bool{}}
}

func (h *heldSet) add(p netip.Prefix) {
	if p.Bits() == h.subnetLen {
		h.exact[p] = true
	} else {
		h.other = append(h.other, p)
	}
}

func (h heldSet) overlaps(p netip.Prefix) bool {
	if h.exact[p] {
		return true
	}
	for _, o := range h.other {
		if o.Overlaps(p) {
			return true
		}
	}
	return false
}
