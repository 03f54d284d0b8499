package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-cni/weft/pkg/etcdclient"
	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/netconf"
)

// Store is the lease store the daemon works against; EtcdStore is the real
// one, tests use an in-memory fake.
type Store interface {
	NetworkConfig(ctx context.Context) (*netconf.Config, error)
	// ListWithoutExpiry returns every lease and the revision to watch from,
	// in one round trip: routing to peers needs no expirations, and filling
	// them costs a round trip per etcd lease (lease.Store.ListWithoutExpiry).
	ListWithoutExpiry(ctx context.Context) ([]lease.Lease, int64, error)
	// Acquire returns the node's lease, reusing or creating it (lease.Store.Acquire).
	Acquire(ctx context.Context, cfg *netconf.Config, attrs lease.Attrs, opt lease.AcquireOptions) (*lease.Lease, error)
	// Watch calls fn with changes after revision rev (lease.Store.Watch).
	Watch(ctx context.Context, rev int64, fn func([]lease.Event)) error
	// KeepAlive keeps the etcd lease id, known to run until expiry, alive
	// until ctx ends. The channel yields the new expiry after each renewal
	// and is closed when ctx ends or the lease can no longer be kept (it
	// expired, was revoked, or etcd did not answer for a whole TTL).
	KeepAlive(ctx context.Context, id clientv3.LeaseID, expiry time.Time) (<-chan time.Time, error)
}

// EtcdStore is the Store backed by etcd.
type EtcdStore struct {
	*lease.Store
	cli *clientv3.Client
}

var _ Store = (*EtcdStore)(nil)

// NewEtcdStore connects (lazily) to etcd as c says.
func NewEtcdStore(c *Config, opts ...lease.Option) (*EtcdStore, error) {
	cli, err := etcdclient.New(etcdclient.Config{
		Endpoints: c.EtcdEndpoints, CAFile: c.EtcdCAFile, CertFile: c.EtcdCertFile, KeyFile: c.EtcdKeyFile,
	}, nil)
	if err != nil {
		return nil, err
	}
	return &EtcdStore{Store: lease.NewStore(cli, c.EtcdPrefix, opts...), cli: cli}, nil
}

// Close closes the etcd client.
func (s *EtcdStore) Close() error { return s.cli.Close() }

// KeepAlive implements Store with etcd's keep-alive stream: one etcd lease,
// renewed in place every third of its TTL, with no write to the key (so
// watchers see nothing).
//
// The etcd client also ends a stream whose first answer does not come
// within its dial timeout plus a second: etcd away for a few seconds just as
// the stream starts (a leader election, a rolling restart) while the lease
// has most of its TTL left. Such an end is not the lease's: the stream is
// started again until the lease is past expiry or etcd says it is gone.
func (s *EtcdStore) KeepAlive(ctx context.Context, id clientv3.LeaseID, expiry time.Time) (<-chan time.Time, error) {
	ch, err := s.cli.KeepAlive(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("keeping etcd lease %x alive: %w", int64(id), err)
	}
	out := make(chan time.Time)
	go func() {
		defer close(out)
		for {
			for resp := range ch {
				expiry = time.Now().Add(time.Duration(resp.TTL) * time.Second)
				select {
				case out <- expiry:
				case <-ctx.Done():
					return
				}
			}
			if !s.mayStillHold(ctx, id, expiry) {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(keepAliveRestartDelay):
			}
			if ch, err = s.cli.KeepAlive(ctx, id); err != nil {
				return
			}
		}
	}()
	return out, nil
}

// keepAliveRestartDelay spaces the restarts of a keep-alive stream that
// ended while its lease may still run.
const keepAliveRestartDelay = time.Second

// mayStillHold tells whether etcd lease id, known to run until expiry, may
// still be alive after its keep-alive stream ended: not past expiry, and
// etcd, if it answers, does not say it is gone.
func (s *EtcdStore) mayStillHold(ctx context.Context, id clientv3.LeaseID, expiry time.Time) bool {
	if ctx.Err() != nil || !time.Now().Before(expiry) {
		return false
	}
	tctx, cancel := context.WithTimeout(ctx, etcdclient.DefaultDialTimeout)
	defer cancel()
	resp, err := s.cli.TimeToLive(tctx, id)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return false
	}
	return err != nil || resp.TTL > 0
}
