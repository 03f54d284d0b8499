package ipam

import (
	"context"
	"errors"
	"fmt"
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

// TestAllocateFullWithUnattributedPods: a pod interface whose attachment
// is unknown (a veth from before the marks) may hold any address of a
// full subnet, so nothing is freed, even for pods that look gone; GC (which
// has the runtime's list) and the adoption of a missing store still use the
// attachments that were named.
func TestAllocateFullWithUnattributedPods(t *testing.T) {
	unattributed := fmt.Errorf("%w: vethlegacy", ErrUnattributed)
	var before map[Attachment]netip.Addr
	live := func() (map[Attachment]netip.Addr, error) {
		return map[Attachment]netip.Addr{pod(0): before[pod(0)]}, unattributed
	}
	p, f, reclaimed := fullPool(t, live)
	before = maps.Clone(f.st.Entries)
	saves := f.saves
	_, err := p.Allocate(context.Background(), Attachment{ContainerID: "new", IfName: "eth0"})
	if !errors.Is(err, ErrExhausted) || !errors.Is(err, ErrUnattributed) {
		t.Fatalf("Allocate = %v, want ErrExhausted saying why nothing was freed", err)
	}
	if len(*reclaimed) != 0 || f.saves != saves || !maps.Equal(f.st.Entries, before) {
		t.Fatalf("freed %v with a pod's interface unattributed", *reclaimed)
	}

	freed, wired, err := p.GC(context.Background(), []Attachment{pod(1), pod(2), pod(3)})
	if err != nil || len(freed) != 1 || freed[0] != before[pod(4)] || !slices.Equal(wired, []Attachment{pod(0)}) {
		t.Errorf("GC = %v, %v, %v; want p4's address freed, p0 kept as wired", freed, wired, err)
	}

	adopting := poolWithLive(t, map[Attachment]netip.Addr{pod(0): before[pod(0)]})
	adopting.live = live
	got, err := adopting.Allocate(context.Background(), Attachment{ContainerID: "new", IfName: "eth0"})
	if err != nil || got == before[pod(0)] {
		t.Fatalf("Allocate on a missing store = %s, %v; want an address other than p0's", got, err)
	}
	if addr, ok, err := adopting.Lookup(context.Background(), pod(0)); err != nil || !ok || addr != before[pod(0)] {
		t.Errorf("p0 after adoption = %s %t %v, want %s adopted", addr, ok, err, before[pod(0)])
	}
}

// TestSubnetUsage: the addresses of the subnet held, out of those that can
// be handed out, and which holders have no interface; entries of a former
// lease do not count.
func TestSubnetUsage(t *testing.T) {
	st := NewState()
	st.Entries[pod(0)] = netip.MustParseAddr("172.7.21.2")
	st.Entries[pod(1)] = netip.MustParseAddr("172.7.21.3")
	st.Entries[pod(2)] = netip.MustParseAddr("172.7.21.6")
	st.Entries[pod(3)] = netip.MustParseAddr("172.7.99.2") // a former lease's
	subnet := netip.MustParsePrefix("172.7.21.1/29")
	live := map[Attachment]netip.Addr{pod(1): st.Entries[pod(1)]}
	u, err := SubnetUsage(st, subnet, live)
	if err != nil {
		t.Fatal(err)
	}
	want := Usage{Subnet: netip.MustParsePrefix("172.7.21.0/29"), InUse: 3, Size: 5, Gone: []Attachment{pod(0), pod(2)}}
	if u.Subnet != want.Subnet || u.InUse != want.InUse || u.Size != want.Size || !slices.Equal(u.Gone, want.Gone) || u.Full() {
		t.Errorf("SubnetUsage = %+v (full %t), want %+v, not full", u, u.Full(), want)
	}
	if u, _ := SubnetUsage(st, subnet, nil); u.Gone != nil || u.InUse != 3 {
		t.Errorf("with the interfaces unknown: %+v, want no gone holders listed", u)
	}
	st.Entries[pod(4)] = netip.MustParseAddr("172.7.21.4")
	st.Entries[pod(5)] = netip.MustParseAddr("172.7.21.5")
	if u, _ := SubnetUsage(st, subnet, live); !u.Full() {
		t.Errorf("five of five held: %+v, want full", u)
	}
}
