// Package lease keeps node subnet leases in etcd, in flannel's schema:
// <prefix>/config holds the network config and <prefix>/subnets/<a.b.c.d>-<len>
// one lease per node. A key bound to an etcd lease expires with it; a key
// with no etcd lease is a permanent reservation.
package lease

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-cni/weft/pkg/netconf"
)

// Sentinel errors, for errors.Is.
var (
	ErrNotFound     = errors.New("not found")
	ErrNoFreeSubnet = errors.New("no free subnet")
	ErrConflict     = errors.New("changed concurrently")
	ErrCompacted    = errors.New("watch revision compacted")
)

// Lease is one subnet key.
type Lease struct {
	Subnet netip.Prefix
	Attrs  Attrs
	// Expiration is when the etcd lease runs out; zero for a reservation.
	Expiration time.Time
	// EtcdLease is the etcd lease the key is bound to; 0 for a reservation.
	EtcdLease clientv3.LeaseID
	// ModRevision is the etcd revision of the last write of the key (of its
	// deletion, in a Removed event). Release and rewrites compare it.
	ModRevision int64

	key            string // the etcd key, which may be a flannel dual-stack key
	createRevision int64
}

// Reservation reports whether the key is a permanent reservation: it is
// bound to no etcd lease and never expires.
func (l *Lease) Reservation() bool {
	return l.EtcdLease == 0
}

// PublicIPIn reports whether the lease's PublicIP lies in the node network
// cidr (always, when cidr is not set). A lease outside it is forged or
// misconfigured and must not pull pod traffic to an arbitrary address.
func (l *Lease) PublicIPIn(cidr netip.Prefix) bool {
	return !cidr.IsValid() || cidr.Contains(l.Attrs.PublicIP)
}

// Store reads and writes leases under one etcd prefix.
type Store struct {
	cli    *clientv3.Client
	prefix string
	log    *slog.Logger
}

// Option configures a Store.
type Option func(*Store)

// WithLogger sets the logger for warnings (malformed keys); default slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) { s.log = l }
}

// NewStore returns a store under prefix; "" means DefaultPrefix.
func NewStore(cli *clientv3.Client, prefix string, opts ...Option) *Store {
	s := &Store{cli: cli, prefix: normalizePrefix(prefix), log: slog.Default()}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Prefix returns the etcd prefix, without a trailing slash.
func (s *Store) Prefix() string { return s.prefix }

// NetworkConfig reads and parses <prefix>/config.
func (s *Store) NetworkConfig(ctx context.Context) (*netconf.Config, error) {
	key := configKey(s.prefix)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("reading network config %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("reading network config: key %s: %w", key, ErrNotFound)
	}
	cfg, err := netconf.Parse(resp.Kvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("network config %s: %w", key, err)
	}
	return cfg, nil
}

// PutNetworkConfig validates raw with netconf.Parse and writes it to <prefix>/config.
func (s *Store) PutNetworkConfig(ctx context.Context, raw []byte) error {
	if _, err := netconf.Parse(raw); err != nil {
		return fmt.Errorf("writing network config: %w", err)
	}
	key := configKey(s.prefix)
	if _, err := s.cli.Put(ctx, key, string(raw)); err != nil {
		return fmt.Errorf("writing network config %s: %w", key, err)
	}
	return nil
}

// List returns every lease, sorted by subnet, and the etcd revision of the
// read (Watch from it to follow changes). Malformed entries are skipped with
// a warning.
func (s *Store) List(ctx context.Context) ([]Lease, int64, error) {
	leases, rev, err := s.list(ctx)
	if err != nil {
		return nil, 0, err
	}
	if err := s.fillExpirations(ctx, leases); err != nil {
		return nil, 0, err
	}
	return leases, rev, nil
}

// ListWithoutExpiry is List without Expiration filled in: one etcd round
// trip whatever the number of leases, for callers that only route to peers.
func (s *Store) ListWithoutExpiry(ctx context.Context) ([]Lease, int64, error) {
	return s.list(ctx)
}

// list is List without expirations, which cost one round trip per etcd lease.
func (s *Store) list(ctx context.Context) ([]Lease, int64, error) {
	l, err := s.listAll(ctx)
	if err != nil {
		return nil, 0, err
	}
	return l.leases, l.rev, nil
}

// listing is one read of the subnet keys.
type listing struct {
	leases []Lease
	// unreadable are keys whose name is a subnet but whose value does not
	// decode (a hand-written reservation with a typo, say). Someone holds
	// the subnet, though weft cannot tell who: it is never routed, never
	// given out.
	unreadable []unreadableKey
	rev        int64
}

type unreadableKey struct {
	subnet netip.Prefix
	key    string
}

// listAll is list with the unreadable keys.
func (s *Store) listAll(ctx context.Context) (listing, error) {
	dir := subnetsDir(s.prefix)
	resp, err := s.cli.Get(ctx, dir, clientv3.WithPrefix())
	if err != nil {
		return listing{}, fmt.Errorf("listing %s: %w", dir, err)
	}
	l := s.decodeAll(resp.Kvs)
	l.rev = resp.Header.Revision
	return l, nil
}

// decodeAll decodes kvs, skipping malformed keys with a warning; those whose
// name is a subnet are kept as unreadable.
func (s *Store) decodeAll(kvs []*mvccpb.KeyValue) listing {
	out := listing{leases: make([]Lease, 0, len(kvs))}
	for _, kv := range kvs {
		l, err := decodeKV(kv)
		if err == nil {
			out.leases = append(out.leases, l)
			continue
		}
		subnet, kerr := ParseSubnetKey(string(kv.Key))
		if kerr != nil {
			s.log.Warn("skipping malformed subnet lease", "key", string(kv.Key), "error", err)
			continue
		}
		s.log.Warn("skipping malformed subnet lease; its subnet counts as held and is never given out: fix or delete the key",
			"key", string(kv.Key), "subnet", subnet, "error", err)
		out.unreadable = append(out.unreadable, unreadableKey{subnet: subnet, key: string(kv.Key)})
	}
	slices.SortFunc(out.leases, func(a, b Lease) int { return compareLeases(&a, &b) })
	return out
}

func compareLeases(a, b *Lease) int {
	if c := a.Subnet.Addr().Compare(b.Subnet.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Subnet.Bits(), b.Subnet.Bits())
}

func decodeKV(kv *mvccpb.KeyValue) (Lease, error) {
	subnet, err := ParseSubnetKey(string(kv.Key))
	if err != nil {
		return Lease{}, err
	}
	var attrs Attrs
	if err := json.Unmarshal(kv.Value, &attrs); err != nil {
		return Lease{}, fmt.Errorf("decoding %s: %w", kv.Key, err)
	}
	return Lease{
		Subnet:         subnet,
		Attrs:          attrs,
		EtcdLease:      clientv3.LeaseID(kv.Lease),
		ModRevision:    kv.ModRevision,
		key:            string(kv.Key),
		createRevision: kv.CreateRevision,
	}, nil
}

// fillExpirations asks etcd how long each distinct etcd lease has left.
func (s *Store) fillExpirations(ctx context.Context, leases []Lease) error {
	known := map[clientv3.LeaseID]time.Time{}
	for i := range leases {
		id := leases[i].EtcdLease
		if id == 0 {
			continue
		}
		exp, ok := known[id]
		if !ok {
			var err error
			if exp, _, err = s.expiration(ctx, id); err != nil {
				return err
			}
			known[id] = exp
		}
		leases[i].Expiration = exp
	}
	return nil
}

// expiration returns when etcd lease id runs out and whether it is still
// alive. A lease that is gone expires now.
func (s *Store) expiration(ctx context.Context, id clientv3.LeaseID) (time.Time, bool, error) {
	now := time.Now()
	resp, err := s.cli.TimeToLive(ctx, id)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return now, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("reading TTL of etcd lease %x: %w", int64(id), err)
	}
	if resp.TTL <= 0 {
		return now, false, nil
	}
	return now.Add(time.Duration(resp.TTL) * time.Second), true, nil
}

// Get returns the lease of subnet, or an error wrapping ErrNotFound.
func (s *Store) Get(ctx context.Context, subnet netip.Prefix) (*Lease, error) {
	key := SubnetKey(s.prefix, subnet)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("reading lease %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("lease of %s (key %s): %w", subnet, key, ErrNotFound)
	}
	l, err := decodeKV(resp.Kvs[0])
	if err != nil {
		return nil, err
	}
	return s.withExpiration(ctx, l)
}

// withExpiration fills l's Expiration.
func (s *Store) withExpiration(ctx context.Context, l Lease) (*Lease, error) {
	one := []Lease{l}
	if err := s.fillExpirations(ctx, one); err != nil {
		return nil, err
	}
	return &one[0], nil
}

// FindByPublicIP returns the lease held by the node with public IP ip (the
// oldest, should there be several), or an error wrapping ErrNotFound.
func (s *Store) FindByPublicIP(ctx context.Context, ip netip.Addr) (*Lease, error) {
	leases, _, err := s.list(ctx)
	if err != nil {
		return nil, err
	}
	own := oldest(leases, func(l *Lease) bool { return l.Attrs.PublicIP == ip })
	if own == nil {
		return nil, fmt.Errorf("lease of node %s under %s: %w", ip, s.prefix, ErrNotFound)
	}
	return s.withExpiration(ctx, *own)
}

// Own returns the lease Acquire would reuse for the node at publicIP: its
// oldest lease inside network, or nil.
func Own(leases []Lease, publicIP netip.Addr, network *netconf.Config) *Lease {
	return oldest(leases, func(l *Lease) bool { return l.Attrs.PublicIP == publicIP && network.Contains(l.Subnet) })
}

// FillExpiration sets l.Expiration from its etcd lease (one round trip; none
// for a reservation), for a caller that listed without expiry.
func (s *Store) FillExpiration(ctx context.Context, l *Lease) error {
	if l.EtcdLease == 0 {
		return nil
	}
	exp, _, err := s.expiration(ctx, l.EtcdLease)
	if err != nil {
		return err
	}
	l.Expiration = exp
	return nil
}

// oldest returns the earliest created lease matching keep, or nil.
func oldest(leases []Lease, keep func(*Lease) bool) *Lease {
	var best *Lease
	for i := range leases {
		l := &leases[i]
		if keep(l) && (best == nil || l.createRevision < best.createRevision) {
			best = l
		}
	}
	return best
}

// Release deletes l's key if it has not been written since l was read (its
// ModRevision still matches); otherwise it returns an error wrapping
// ErrConflict. A key already gone is not an error. The etcd lease, if any,
// is revoked after the key is deleted.
func (s *Store) Release(ctx context.Context, l *Lease) error {
	deleted, err := s.deleteUnchanged(ctx, l)
	if err != nil {
		return fmt.Errorf("releasing: %w", err)
	}
	if !deleted {
		return nil
	}
	return s.revoke(ctx, l)
}

// deleteUnchanged deletes l's key if its ModRevision still matches, and
// reports whether it did. A key already gone is not an error; a key written
// since gives an error wrapping ErrConflict.
func (s *Store) deleteUnchanged(ctx context.Context, l *Lease) (bool, error) {
	key := s.keyOf(l)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", l.ModRevision)).
		Then(clientv3.OpDelete(key)).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return false, fmt.Errorf("deleting %s: %w", key, err)
	}
	if resp.Succeeded {
		return true, nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return false, nil
	}
	return false, fmt.Errorf("deleting %s: written at revision %d since revision %d: %w",
		key, kvs[0].ModRevision, l.ModRevision, ErrConflict)
}

// revoke revokes l's etcd lease, if any, once its key is deleted.
func (s *Store) revoke(ctx context.Context, l *Lease) error {
	if l.EtcdLease == 0 {
		return nil
	}
	if _, err := s.cli.Revoke(ctx, l.EtcdLease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("deleted %s but revoking etcd lease %x: %w", s.keyOf(l), int64(l.EtcdLease), err)
	}
	return nil
}

func (s *Store) keyOf(l *Lease) string {
	if l.key != "" {
		return l.key
	}
	return SubnetKey(s.prefix, l.Subnet)
}
