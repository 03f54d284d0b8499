package ipam

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// fullPool is a /29 (five pod addresses) whose every address is taken by
// pods p0..p4, with live reporting the attachments that still have an
// interface and reclaimed collecting what Allocate frees.
func fullPool(t *testing.T, live func() (map[Attachment]netip.Addr, error)) (*Pool, *fakeStore, *[]Attachment) {
	t.Helper()
	f := newFakeStore()
	p := NewPool(f, netip.MustParsePrefix("172.7.21.0/29"))
	for i := range 5 {
		mustAllocate(t, p, Attachment{ContainerID: "p" + string(rune('0'+i)), IfName: "eth0"})
	}
	var reclaimed []Attachment
	p.AdoptLive(live, func(a Attachment, _ netip.Addr) { reclaimed = append(reclaimed, a) })
	return p, f, &reclaimed
}

func pod(i int) Attachment { return Attachment{ContainerID: "p" + string(rune('0'+i)), IfName: "eth0"} }

// TestAllocateReclaimsGonePods: in a full subnet, the addresses of pods
// whose interfaces are gone (they died without a DEL) are freed and one is
// handed out; pods with an interface, the one being added among them (its
// veth is plugged in, no address yet), keep theirs.
func TestAllocateReclaimsGonePods(t *testing.T) {
	newPod := Attachment{ContainerID: "new", IfName: "eth0"}
	var before map[Attachment]netip.Addr
	p, f, reclaimed := fullPool(t, func() (map[Attachment]netip.Addr, error) {
		return map[Attachment]netip.Addr{
			pod(0): before[pod(0)], pod(3): before[pod(3)],
			newPod: netip.IPv4Unspecified(), // plugged in, allocating
		}, nil
	})
	before = maps.Clone(f.st.Entries)

	got := mustAllocate(t, p, newPod)
	if got == before[pod(0)] || got == before[pod(3)] {
		t.Fatalf("handed out %s, which a live pod holds", got)
	}
	if want := []Attachment{pod(1), pod(2), pod(4)}; !slices.Equal(*reclaimed, want) {
		t.Errorf("reclaimed %v, want the gone pods %v", *reclaimed, want)
	}
	want := map[Attachment]netip.Addr{pod(0): before[pod(0)], pod(3): before[pod(3)], newPod: got}
	if after := mustList(t, p); !maps.Equal(after, want) {
		t.Errorf("store after the reclaim = %v, want %v", after, want)
	}
	// Two more fit now without reading the interfaces again.
	*reclaimed = nil
	mustAllocate(t, p, Attachment{ContainerID: "next1", IfName: "eth0"})
	mustAllocate(t, p, Attachment{ContainerID: "next2", IfName: "eth0"})
	if len(*reclaimed) != 0 {
		t.Errorf("reclaimed %v with free addresses left", *reclaimed)
	}
}

// TestAllocateFullWithEveryPodLive: when every holder still has its
// interface, a full subnet stays full and nothing changes.
func TestAllocateFullWithEveryPodLive(t *testing.T) {
	var p *Pool
	var f *fakeStore
	live := func() (map[Attachment]netip.Addr, error) { return maps.Clone(f.st.Entries), nil }
	p, f, reclaimed := fullPool(t, live)
	saves := f.saves
	_, err := p.Allocate(context.Background(), Attachment{ContainerID: "new", IfName: "eth0"})
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("Allocate = %v, want ErrExhausted", err)
	}
	if len(*reclaimed) != 0 || f.saves != saves || len(f.st.Entries) != 5 {
		t.Errorf("a full subnet of live pods changed: reclaimed %v, saves %d -> %d, %d entries", *reclaimed, saves, f.saves, len(f.st.Entries))
	}
}

// TestAllocateFullInterfacesUnreadable: when the interfaces cannot be read,
// nothing is freed: the error says the subnet is full and why no address
// was reclaimed.
func TestAllocateFullInterfacesUnreadable(t *testing.T) {
	p, f, reclaimed := fullPool(t, func() (map[Attachment]netip.Addr, error) { return nil, errors.New("netlink down") })
	saves := f.saves
	_, err := p.Allocate(context.Background(), Attachment{ContainerID: "new", IfName: "eth0"})
	if !errors.Is(err, ErrExhausted) || err == nil || !strings.Contains(err.Error(), "netlink down") {
		t.Fatalf("Allocate = %v, want ErrExhausted naming the failed read", err)
	}
	if len(*reclaimed) != 0 || f.saves != saves {
		t.Errorf("state changed with the interfaces unreadable")
	}
}

// TestAllocateFullWithoutLive: weft-ipam alone (no view of the interfaces)
// never frees anything on its own.
func TestAllocateFullWithoutLive(t *testing.T) {
	f := newFakeStore()
	p := NewPool(f, netip.MustParsePrefix("172.7.21.0/29"))
	for i := range 5 {
		mustAllocate(t, p, pod(i))
	}
	if _, err := p.Allocate(context.Background(), Attachment{ContainerID: "new", IfName: "eth0"}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Allocate = %v, want ErrExhausted", err)
	}
	if len(f.st.Entries) != 5 {
		t.Errorf("entries %v, want the five pods'", f.st.Entries)
	}
}
