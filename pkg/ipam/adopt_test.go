package ipam

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// TestAdoptLive: a store that is missing (wiped while pods run) takes in
// the live attachments before it hands out anything, once; a store that
// exists never asks.
func TestAdoptLive(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	subnet := netip.MustParsePrefix("172.7.21.0/24")
	web, db := Attachment{ContainerID: "web", IfName: "eth0"}, Attachment{ContainerID: "db", IfName: "eth0"}
	calls := 0
	live := func() (map[Attachment]netip.Addr, error) {
		calls++
		return map[Attachment]netip.Addr{
			web:                                      netip.MustParseAddr("172.7.21.2"),
			db:                                       netip.MustParseAddr("172.7.21.3"),
			{ContainerID: "zz-dup", IfName: "eth0"}:  netip.MustParseAddr("172.7.21.3"), // a second claim is ignored
			{ContainerID: "../bad", IfName: "eth0"}:  netip.MustParseAddr("172.7.21.9"), // not a valid attachment
			{ContainerID: "invalid", IfName: "eth0"}: {},
		}, nil
	}
	open := func() *Pool {
		t.Helper()
		store, err := OpenDiskStore(dir, "weft")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		p := NewPool(store, subnet)
		p.AdoptLive(live, nil)
		return p
	}

	p := open()
	got, err := p.Allocate(ctx, Attachment{ContainerID: "new", IfName: "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	if got == netip.MustParseAddr("172.7.21.2") || got == netip.MustParseAddr("172.7.21.3") {
		t.Fatalf("handed out %s, which a live pod holds", got)
	}
	all, err := p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[web] != netip.MustParseAddr("172.7.21.2") || all[db] != netip.MustParseAddr("172.7.21.3") {
		t.Fatalf("store after adoption = %v, want web, db and the new pod", all)
	}
	if _, err := open().Allocate(ctx, Attachment{ContainerID: "next", IfName: "eth0"}); err != nil || calls != 1 {
		t.Fatalf("second allocation: %v, live read %d times, want once", err, calls)
	}
	if err := p.Release(ctx, web); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := p.Lookup(ctx, web); ok {
		t.Error("an adopted attachment was not released by its DEL")
	}

	// Wiped again: adoption happens again.
	if err := os.Remove(filepath.Join(dir, "weft", stateName)); err != nil {
		t.Fatal(err)
	}
	if _, err := open().Allocate(ctx, Attachment{ContainerID: "after-wipe", IfName: "eth0"}); err != nil || calls != 2 {
		t.Fatalf("allocation after a second wipe: %v, live read %d times, want twice", err, calls)
	}

	// A failing live source fails the allocation rather than risk a duplicate.
	if err := os.Remove(filepath.Join(dir, "weft", stateName)); err != nil {
		t.Fatal(err)
	}
	broken := open()
	broken.AdoptLive(func() (map[Attachment]netip.Addr, error) { return nil, errors.New("netlink down") }, nil)
	if _, err := broken.Allocate(ctx, Attachment{ContainerID: "x", IfName: "eth0"}); err == nil {
		t.Error("allocated with the live attachments unknown")
	}
}

// TestLookupAdoptsLive: CHECK's lookup on a wiped store finds a running
// pod's address from its mark, as the next ADD would, instead of reporting
// that IPAM holds nothing for it.
func TestLookupAdoptsLive(t *testing.T) {
	web := Attachment{ContainerID: "web", IfName: "eth0"}
	p := poolWithLive(t, map[Attachment]netip.Addr{web: netip.MustParseAddr("172.7.21.2")})
	got, ok, err := p.Lookup(context.Background(), web)
	if err != nil || !ok || got != netip.MustParseAddr("172.7.21.2") {
		t.Fatalf("Lookup on a wiped store: %s %t %v, want the live pod's 172.7.21.2", got, ok, err)
	}
	if next, err := p.Allocate(context.Background(), Attachment{ContainerID: "new", IfName: "eth0"}); err != nil || next == got {
		t.Fatalf("next allocation %s, %v: must not be the adopted address", next, err)
	}
}

// TestGCKeepsPodsBeingAdded: a pod whose veth is plugged in but whose
// address is still being allocated shows as live with no address (0.0.0.0).
// GC, reading the live pods under the store's lock, keeps the allocation it
// just got; adoption after a wipe takes no 0.0.0.0.
func TestGCKeepsPodsBeingAdded(t *testing.T) {
	ctx := context.Background()
	adding := Attachment{ContainerID: "adding", IfName: "eth0"}
	p := poolWithLive(t, map[Attachment]netip.Addr{adding: netip.IPv4Unspecified()})
	got, err := p.Allocate(ctx, adding)
	if err != nil || got.IsUnspecified() {
		t.Fatalf("Allocate = %s, %v", got, err)
	}
	released, wired, err := p.GC(ctx, nil)
	if err != nil || len(released) != 0 || len(wired) != 1 || wired[0] != adding {
		t.Fatalf("GC = %v, %v, %v; want nothing freed and the pod being added kept", released, wired, err)
	}
	if ip, ok, _ := p.Lookup(ctx, adding); !ok || ip != got {
		t.Errorf("after GC the pod being added holds %s (%t), want %s", ip, ok, got)
	}
}

// poolWithLive is a pool over a new, empty disk store (missing: no state
// file yet) for 172.7.21.0/24, whose node has the live attachments live.
func poolWithLive(t *testing.T, live map[Attachment]netip.Addr) *Pool {
	t.Helper()
	store, err := OpenDiskStore(t.TempDir(), "weft")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	p := NewPool(store, netip.MustParsePrefix("172.7.21.0/24"))
	p.AdoptLive(func() (map[Attachment]netip.Addr, error) { return live, nil }, nil)
	return p
}
