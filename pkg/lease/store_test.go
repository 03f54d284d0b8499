package lease

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weft-cni/weft/pkg/netconf"
)

func TestNewStorePrefix(t *testing.T) {
	for in, want := range map[string]string{"": DefaultPrefix, "/x/": "/x", "/coreos.com/network": DefaultPrefix} {
		if got := NewStore(nil, in).Prefix(); got != want {
			t.Errorf("NewStore(%q).Prefix() = %q, want %q", in, got, want)
		}
	}
}

func TestNetworkConfig(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	_, err := s.NetworkConfig(ctx)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), s.Prefix()+"/config") {
		t.Fatalf("NetworkConfig with no key: %v, want ErrNotFound naming the key", err)
	}
	if err := s.PutNetworkConfig(ctx, []byte(`{"Network":"172.7.0.0/16","Backend":{"Type":"udp"}}`)); !errors.Is(err, netconf.ErrInvalid) {
		t.Fatalf("PutNetworkConfig(udp) = %v, want netconf.ErrInvalid", err)
	}
	if _, err := s.NetworkConfig(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an invalid config was written: %v", err)
	}
	cfg := putConfig(t, s, seedConfig)
	if cfg.Network != netip.MustParsePrefix("172.7.0.0/16") || cfg.SubnetLen != 24 || cfg.Backend.Type != "host-gw" {
		t.Errorf("NetworkConfig = %+v", cfg)
	}
	if _, err := s.cli.Put(ctx, s.Prefix()+"/config", "{"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NetworkConfig(ctx); !errors.Is(err, netconf.ErrInvalid) {
		t.Errorf("NetworkConfig of a corrupt key: %v, want netconf.ErrInvalid", err)
	}
}

func TestListSkipsMalformedAndSorts(t *testing.T) {
	var logs bytes.Buffer
	s := NewStore(newClient(t), testPrefix(t), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	ctx := testCtx(t)
	dir := s.Prefix() + "/subnets/"
	puts := map[string]string{
		"172.7.22.0-24":     `{"PublicIP":"10.4.7.22","PublicIPv6":null,"BackendType":"host-gw"}`,
		"172.7.3.0-24":      `{"PublicIP":"10.4.7.3","PublicIPv6":null,"BackendType":"host-gw"}`,
		"172.7.21.0-24":     `{"PublicIP":"10.4.7.21","PublicIPv6":null,"BackendType":"host-gw"}`,
		"garbage":           `{"PublicIP":"10.4.7.9"}`,
		"172.7.9.0-24":      `not json`,
		"172.7.10.0-24&x-1": `{"PublicIP":"10.4.7.10"}`,
	}
	for k, v := range puts {
		if _, err := s.cli.Put(ctx, dir+k, v); err != nil {
			t.Fatal(err)
		}
	}
	leases, rev, err := s.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if rev == 0 {
		t.Error("List revision is 0")
	}
	var got []string
	for _, l := range leases {
		got = append(got, l.Subnet.String())
		if !l.Reservation() || !l.Expiration.IsZero() || l.ModRevision == 0 {
			t.Errorf("lease %s: reservation %v, expiration %v, revision %d", l.Subnet, l.Reservation(), l.Expiration, l.ModRevision)
		}
	}
	want := "172.7.3.0/24 172.7.10.0/24 172.7.21.0/24 172.7.22.0/24"
	if strings.Join(got, " ") != want {
		t.Errorf("List = %v, want %s", got, want)
	}
	if n := strings.Count(logs.String(), "skipping malformed"); n != 2 {
		t.Errorf("%d warnings, want 2:\n%s", n, logs.String())
	}
	// The key whose name is a subnet still holds it.
	all, err := s.listAll(ctx)
	if err != nil || len(all.unreadable) != 1 || all.unreadable[0].subnet != netip.MustParsePrefix("172.7.9.0/24") || all.unreadable[0].key != dir+"172.7.9.0-24" {
		t.Errorf("listAll unreadable = %+v, %v; want 172.7.9.0/24 only", all.unreadable, err)
	}
}

func TestGetAndFindByPublicIP(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, seedConfig)
	subnet := netip.MustParsePrefix("172.7.21.0/24")
	if _, err := s.Get(ctx, subnet); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get before acquire: %v, want ErrNotFound", err)
	}
	if _, err := s.FindByPublicIP(ctx, netip.MustParseAddr("10.4.7.21")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("FindByPublicIP before acquire: %v, want ErrNotFound", err)
	}
	l, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{Prefer: subnet, TTL: time.Hour})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	for name, get := range map[string]func() (*Lease, error){
		"Get":            func() (*Lease, error) { return s.Get(ctx, subnet) },
		"FindByPublicIP": func() (*Lease, error) { return s.FindByPublicIP(ctx, netip.MustParseAddr("10.4.7.21")) },
	} {
		got, err := get()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.Subnet != subnet || !got.Attrs.Equal(l.Attrs) || got.EtcdLease != l.EtcdLease || got.ModRevision != l.ModRevision {
			t.Errorf("%s = %+v, want %+v", name, got, l)
		}
		if d := got.Expiration.Sub(l.Expiration); d < -5*time.Second || d > 5*time.Second {
			t.Errorf("%s: expiration %v, acquired with %v", name, got.Expiration, l.Expiration)
		}
	}
}

func TestReleaseCAS(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, seedConfig)
	old, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	// Reacquiring with other attributes rewrites the key: old is now stale.
	changed := Attrs{PublicIP: old.Attrs.PublicIP, BackendType: "vxlan", BackendData: []byte(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`)}
	cur, err := s.Acquire(ctx, cfg, changed, AcquireOptions{})
	if err != nil {
		t.Fatalf("Acquire again: %v", err)
	}
	if cur.Subnet != old.Subnet || cur.ModRevision <= old.ModRevision {
		t.Fatalf("reacquired %s at %d, first %s at %d", cur.Subnet, cur.ModRevision, old.Subnet, old.ModRevision)
	}
	if err := s.Release(ctx, old); !errors.Is(err, ErrConflict) {
		t.Fatalf("Release(stale) = %v, want ErrConflict", err)
	}
	if _, err := s.Get(ctx, old.Subnet); err != nil {
		t.Fatalf("stale Release deleted the key: %v", err)
	}
	if err := s.Release(ctx, cur); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if _, err := s.Get(ctx, old.Subnet); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Release: %v, want ErrNotFound", err)
	}
	if err := s.Release(ctx, cur); err != nil {
		t.Fatalf("second Release: %v, want nil (already gone)", err)
	}
}

func TestReleaseRevokesEtcdLease(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, seedConfig)
	l, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{TTL: time.Hour})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if err := s.Release(ctx, l); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if _, alive, err := s.expiration(ctx, l.EtcdLease); err != nil || alive {
		t.Errorf("etcd lease after Release: alive %v, %v", alive, err)
	}
}

// TestOwnAndFillExpiration: Own picks the lease Acquire reuses (the node's
// oldest, not the lowest subnet), and FillExpiration gives a lease listed
// without expiry the one List would show.
func TestOwnAndFillExpiration(t *testing.T) {
	s, ctx := newStore(t), testCtx(t)
	cfg := putConfig(t, s, seedConfig)
	for _, k := range []string{"172.7.99.0-24", "172.7.21.0-24"} { // 99 first: the older
		if _, err := s.cli.Put(ctx, s.Prefix()+"/subnets/"+k, `{"PublicIP":"10.4.7.21","BackendType":"host-gw"}`); err != nil {
			t.Fatal(err)
		}
	}
	leases, _, err := s.ListWithoutExpiry(ctx)
	if err != nil {
		t.Fatal(err)
	}
	own := Own(leases, netip.MustParseAddr("10.4.7.21"), cfg)
	if own == nil || own.Subnet != netip.MustParsePrefix("172.7.99.0/24") {
		t.Fatalf("Own = %v, want the older 172.7.99.0/24", own)
	}
	reused, err := s.Acquire(ctx, cfg, hostGW("10.4.7.21"), AcquireOptions{TTL: time.Hour})
	if err != nil || reused.Subnet != own.Subnet {
		t.Fatalf("Acquire reused %v (%v), Own said %s", reused, err, own.Subnet)
	}
	leases, _, err = s.ListWithoutExpiry(ctx)
	if err != nil {
		t.Fatal(err)
	}
	own = Own(leases, netip.MustParseAddr("10.4.7.21"), cfg)
	if !own.Expiration.IsZero() {
		t.Fatalf("listed without expiry, yet Expiration %v", own.Expiration)
	}
	if err := s.FillExpiration(ctx, own); err != nil {
		t.Fatal(err)
	}
	if d := own.Expiration.Sub(reused.Expiration); d < -5*time.Second || d > 5*time.Second {
		t.Errorf("FillExpiration gave %v, the lease expires at %v", own.Expiration, reused.Expiration)
	}
}
