package daemon

import (
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weft-cni/weft/internal/etcdembed"
)

// TestKeepAliveOutlivesABriefOutage: etcd goes away just as the keep-alive
// starts (a leader election, a rolling restart) and comes back 4 s later.
// The etcd client ends a keep-alive stream whose first answer does not come
// within its dial timeout plus a second, though the lease has most of its
// TTL left; the daemon must not take that for the lease's end (it would drop
// readiness and acquire again). The stream carries on once etcd is back.
func TestKeepAliveOutlivesABriefOutage(t *testing.T) {
	dir := t.TempDir()
	srv, err := etcdembed.Start(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	url := srv.Endpoints()[0]
	ctx := t.Context()
	store, grant := storeWithLease(t, srv)
	expiry := time.Now().Add(600 * time.Second)
	srv.Close()
	renewals, err := store.KeepAlive(ctx, grant.ID, expiry)
	if err != nil {
		t.Fatal(err)
	}
	// The outage's length, longer than the client's first-answer timeout.
	back := time.After(4 * time.Second)
	for {
		select {
		case exp, ok := <-renewals:
			if !ok {
				t.Fatal("the keep-alive ended during a 4 s outage, with the lease valid for 10 minutes")
			}
			if back != nil {
				t.Fatalf("a renewal (%v) while etcd was down", exp)
			}
			if exp.Before(time.Now()) {
				t.Fatalf("renewal with expiry %v in the past", exp)
			}
			return
		case <-back:
			back = nil
			srv, err = etcdembed.Start(dir, url)
			if err != nil {
				t.Fatalf("restarting etcd: %v", err)
			}
			t.Cleanup(srv.Close)
		case <-time.After(30 * time.Second):
			t.Fatal("no renewal within 30 s of etcd's return")
		}
	}
}

// TestKeepAliveRestartsOnlyALeaseThatMayRun: a keep-alive stream that ended
// is started again only while its lease may still run: before its expiry,
// and not when etcd says it is gone (revoked, expired). While etcd does not
// answer, the known expiry decides.
func TestKeepAliveRestartsOnlyALeaseThatMayRun(t *testing.T) {
	srv, err := etcdembed.Start("", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	ctx := t.Context()
	store, grant := storeWithLease(t, srv)
	later, past := time.Now().Add(600*time.Second), time.Now().Add(-time.Second)
	if !store.mayStillHold(ctx, grant.ID, later) {
		t.Error("a live lease before its expiry: not restarted")
	}
	if store.mayStillHold(ctx, grant.ID, past) {
		t.Error("a lease past its known expiry: restarted")
	}
	if _, err := store.cli.Revoke(ctx, grant.ID); err != nil {
		t.Fatal(err)
	}
	if store.mayStillHold(ctx, grant.ID, later) {
		t.Error("a revoked lease: restarted")
	}
	srv.Close()
	if !store.mayStillHold(ctx, grant.ID+1, later) {
		t.Error("etcd not answering, the lease's known expiry ahead: not restarted")
	}
}

// storeWithLease connects an EtcdStore to srv and grants an etcd lease of
// 10 minutes.
func storeWithLease(t *testing.T, srv *etcdembed.Server) (*EtcdStore, *clientv3.LeaseGrantResponse) {
	t.Helper()
	store, err := NewEtcdStore(&Config{EtcdEndpoints: srv.Endpoints(), EtcdPrefix: "/weft-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	grant, err := store.cli.Grant(t.Context(), 600)
	if err != nil {
		t.Fatal(err)
	}
	return store, grant
}
