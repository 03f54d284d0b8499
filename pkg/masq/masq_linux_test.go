package masq

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/weft-cni/weft/internal/nstest"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/coreos/go-iptables/iptables"
)

// testNetwork is a benchmarking range (RFC 2544) no real cluster uses, so
// its absence from the root namespace's rules is meaningful.
var testNetwork = netip.MustParsePrefix("198.18.0.0/16")

// newNS creates a network namespace that is removed when the test ends.
func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skipf("needs the iptables command: %v", err)
	}
	return nstest.New(t, "runs the real iptables")
}

// inNS runs fn with the calling OS thread in target, and checks first that a
// child process started from that thread lands in target too: go-iptables
// execs iptables, and the rules must never reach the root namespace.
func inNS(t *testing.T, target ns.NetNS, fn func(ipt *iptables.IPTables) error) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(target.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	err := target.Do(func(ns.NetNS) error {
		runtime.LockOSThread() // Do holds the lock already; this documents the need
		defer runtime.UnlockOSThread()
		out, err := exec.Command("readlink", "/proc/self/ns/net").Output()
		if err != nil {
			return fmt.Errorf("reading child's netns: %w", err)
		}
		if got := strings.TrimSpace(string(out)); got != want {
			return fmt.Errorf("child runs in netns %s, want %s", got, want)
		}
		ipt, err := iptables.New()
		if err != nil {
			return err
		}
		return fn(ipt)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// listS runs iptables -S read-only in the calling thread's namespace.
func listS(table, chain string) ([]string, error) {
	args := []string{"-w", "-t", table, "-S"}
	if chain != "" {
		args = append(args, chain)
	}
	out, err := exec.Command("iptables", args...).Output()
	if err != nil {
		return nil, fmt.Errorf("iptables %s: %w", strings.Join(args, " "), err)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n"), nil
}

func TestRealIPTablesDockerInFront(t *testing.T) {
	target := newNS(t)
	r := Rules{Network: testNetwork, IPMasq: true}
	docker := []string{"-s", "172.17.0.0/16", "!", "-o", "docker0", "-j", "MASQUERADE"}

	inNS(t, target, func(ipt *iptables.IPTables) error {
		// A fresh namespace has empty builtin chains: the cheap path's
		// ListById must cope and fall back to a full Ensure.
		if _, err := EnsureFront(ipt, r); err != nil {
			return fmt.Errorf("first EnsureFront: %w", err)
		}
		if err := ipt.Insert("nat", "POSTROUTING", 1, docker...); err != nil {
			return err
		}
		if p, err := Check(ipt, r); err != nil || !slices.Equal(p, []string{"jump to WEFT-POSTRTG is not first in nat POSTROUTING"}) {
			return fmt.Errorf("Check with docker in front = %q, %v", p, err)
		}
		rep, err := EnsureFront(ipt, r)
		if err != nil {
			return err
		}
		want := []string{
			"inserted jump to WEFT-POSTRTG at top of nat POSTROUTING",
			"removed duplicate jump to WEFT-POSTRTG at position 3 of nat POSTROUTING",
		}
		if !slices.Equal(rep.Repairs, want) {
			return fmt.Errorf("repairs = %q, want %q", rep.Repairs, want)
		}
		return nil
	})

	inNS(t, target, func(ipt *iptables.IPTables) error {
		got, err := listS("nat", "POSTROUTING")
		if err != nil {
			return err
		}
		want := []string{
			"-P POSTROUTING ACCEPT",
			"-A POSTROUTING -m comment --comment weft -j WEFT-POSTRTG",
			"-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("nat POSTROUTING:\n got %q\nwant %q", got, want)
		}
		if got, err = listS("nat", ChainNAT); err != nil {
			return err
		}
		masq := `-A WEFT-POSTRTG -s 198.18.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "weft: pod to outside masqueraded" -j MASQUERADE`
		if ipt.HasRandomFully() {
			masq += " --random-fully"
		}
		want = []string{"-N WEFT-POSTRTG",
			`-A WEFT-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "weft: kube-proxy masquerades what it marked" -j RETURN`,
			`-A WEFT-POSTRTG -m mark --mark 0x2000/0x2000 -m comment --comment "weft: portmap masquerades what it marked" -j RETURN`,
			`-A WEFT-POSTRTG -s 198.18.0.0/16 -d 198.18.0.0/16 -m comment --comment "weft: pod to pod keeps source ip" -j ACCEPT`,
			masq}
		if !slices.Equal(got, want) {
			return fmt.Errorf("nat WEFT-POSTRTG:\n got %q\nwant %q", got, want)
		}
		if rep, err := EnsureFront(ipt, r); err != nil || len(rep.Repairs) != 0 {
			return fmt.Errorf("EnsureFront when in place = %q, %v", rep.Repairs, err)
		}
		if rep, err := Ensure(ipt, r); err != nil || len(rep.Repairs) != 0 {
			return fmt.Errorf("Ensure when in place = %q, %v", rep.Repairs, err)
		}
		if p, err := Check(ipt, r); err != nil || len(p) != 0 {
			return fmt.Errorf("Check when in place = %q, %v", p, err)
		}
		return nil
	})

	assertAbsentFromRoot(t)

	inNS(t, target, func(ipt *iptables.IPTables) error {
		for range 2 {
			if err := Remove(ipt); err != nil {
				return fmt.Errorf("Remove: %w", err)
			}
		}
		got, err := listS("nat", "")
		if err != nil {
			return err
		}
		if strings.Contains(strings.Join(got, "\n"), "WEFT") || !slices.Contains(got, "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE") {
			return fmt.Errorf("after Remove, nat table = %q", got)
		}
		return nil
	})
}

// assertAbsentFromRoot lists, read-only, the namespace the test runs in and
// fails if any rule for testNetwork leaked there.
func assertAbsentFromRoot(t *testing.T) {
	t.Helper()
	for _, table := range []string{"nat", "filter"} {
		got, err := listS(table, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range got {
			if strings.Contains(line, testNetwork.String()) {
				t.Errorf("rule leaked into the root namespace: %s", line)
			}
		}
	}
}

// TestRealIPTablesSurplusJumps: stale variants of our jumps (as iptables -S
// prints them, quoting included) and surplus exact copies are deleted by
// spec by the real iptables -D, and the foreign rules between them stay.
func TestRealIPTablesSurplusJumps(t *testing.T) {
	target := newNS(t)
	r := Rules{Network: testNetwork, IPMasq: true}
	drop := []string{"-s", "192.168.0.0/16", "-j", "DROP"}
	docker := []string{"-s", "172.17.0.0/16", "!", "-o", "docker0", "-j", "MASQUERADE"}

	inNS(t, target, func(ipt *iptables.IPTables) error {
		if _, err := Ensure(ipt, r); err != nil {
			return err
		}
		for _, rule := range []struct {
			table, chain string
			spec         []string
		}{
			{"filter", "FORWARD", drop},
			{"filter", "FORWARD", []string{"-m", "comment", "--comment", "weft 0.3 \"old\"", "-j", ChainForward}},
			{"filter", "FORWARD", jumpTo(ChainForward)},
			{"filter", "FORWARD", []string{"-g", ChainForward}},
			{"nat", "POSTROUTING", docker},
			{"nat", "POSTROUTING", []string{"-j", ChainNAT}},
			{"nat", "POSTROUTING", jumpTo(ChainNAT)},
		} {
			if err := ipt.Append(rule.table, rule.chain, rule.spec...); err != nil {
				return err
			}
		}
		rep, err := Ensure(ipt, r)
		if err != nil {
			return err
		}
		want := []string{
			"removed duplicate jump to WEFT-POSTRTG at position 4 of nat POSTROUTING",
			"removed stale jump to WEFT-POSTRTG from nat POSTROUTING: -j WEFT-POSTRTG",
			"removed stale jump to WEFT-FWD from filter FORWARD: -g WEFT-FWD",
			"removed duplicate jump to WEFT-FWD from filter FORWARD",
			`removed stale jump to WEFT-FWD from filter FORWARD: -m comment --comment "weft 0.3 \"old\"" -j WEFT-FWD`,
		}
		if !slices.Equal(rep.Repairs, want) {
			return fmt.Errorf("repairs = %q\nwant %q", rep.Repairs, want)
		}
		for _, c := range []struct {
			table, chain string
			want         []string
		}{
			{"nat", "POSTROUTING", []string{"-P POSTROUTING ACCEPT",
				"-A POSTROUTING -m comment --comment weft -j WEFT-POSTRTG",
				"-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"}},
			{"filter", "FORWARD", []string{"-P FORWARD ACCEPT",
				"-A FORWARD -s 192.168.0.0/16 -j DROP",
				"-A FORWARD -m comment --comment weft -j WEFT-FWD"}},
		} {
			got, err := listS(c.table, c.chain)
			if err != nil {
				return err
			}
			if !slices.Equal(got, c.want) {
				return fmt.Errorf("%s %s:\n got %q\nwant %q", c.table, c.chain, got, c.want)
			}
		}
		if p, err := Check(ipt, r); err != nil || len(p) != 0 {
			return fmt.Errorf("Check after repair = %q, %v", p, err)
		}
		return Remove(ipt)
	})
	assertAbsentFromRoot(t)
}

// TestRealDeleteJumpByHandle: a surplus jump read at some position is
// deleted by its nf_tables handle, after checking that the rule there still
// jumps to weft's chain: when another program has inserted a rule above it
// since, the rule now at that position is left alone and the caller reads
// again. With iptables-legacy there is nothing in nf_tables to go by.
func TestRealDeleteJumpByHandle(t *testing.T) {
	target := newNS(t)
	foreign := []string{"-s", "10.9.0.0/16", "-j", "ACCEPT"}
	docker := []string{"-s", "172.17.0.0/16", "!", "-o", "docker0", "-j", "MASQUERADE"}
	legacy := false
	inNS(t, target, func(ipt *iptables.IPTables) error {
		if _, err := Ensure(ipt, Rules{Network: testNetwork, IPMasq: true}); err != nil {
			return err
		}
		if err := ipt.Append("nat", "POSTROUTING", docker...); err != nil {
			return err
		}
		if err := ipt.Append("nat", "POSTROUTING", jumpTo(ChainNAT)...); err != nil {
			return err
		}
		// Read: [weft jump, docker, weft jump]; the surplus one is at 3.
		// Another program then inserts above everything.
		if err := ipt.Insert("nat", "POSTROUTING", 1, foreign...); err != nil {
			return err
		}
		handled, err := deleteJumpByHandle("nat", "POSTROUTING", 3, ChainNAT)
		if !handled {
			legacy = true
			return nil
		}
		if !errors.Is(err, errJumpMoved) {
			return fmt.Errorf("delete at the stale position 3 = %v, want errJumpMoved", err)
		}
		if handled, err := deleteJumpByHandle("nat", "POSTROUTING", 4, ChainNAT); !handled || err != nil {
			return fmt.Errorf("delete at the jump's new position 4 = %t, %v", handled, err)
		}
		got, err := listS("nat", "POSTROUTING")
		if err != nil {
			return err
		}
		want := []string{"-P POSTROUTING ACCEPT",
			"-A POSTROUTING -s 10.9.0.0/16 -j ACCEPT",
			"-A POSTROUTING -m comment --comment weft -j WEFT-POSTRTG",
			"-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"}
		if !slices.Equal(got, want) {
			return fmt.Errorf("nat POSTROUTING = %q\nwant %q", got, want)
		}
		return nil
	})
	if legacy {
		t.Skip("iptables keeps its rules outside nf_tables here (legacy)")
	}
}

// TestRulesInLegacyReadsTheCallersNamespace: RulesInLegacy answers for the
// namespace of the calling thread, which need not be the main thread's (a
// test, or any caller inside ns.Do): a nat table iptables-legacy made in a
// namespace is seen there, and one in no namespace is not.
func TestRulesInLegacyReadsTheCallersNamespace(t *testing.T) {
	if _, err := exec.LookPath("iptables-legacy"); err != nil {
		t.Skipf("needs iptables-legacy: %v", err)
	}
	target := newNS(t)
	var before, after bool
	inNS(t, target, func(*iptables.IPTables) error {
		before = RulesInLegacy()
		if out, err := exec.Command("iptables-legacy", "-w", "-t", "nat", "-N", "WEFT-TEST").CombinedOutput(); err != nil {
			return fmt.Errorf("iptables-legacy: %w: %s", err, out)
		}
		after = RulesInLegacy()
		return nil
	})
	if before || !after {
		t.Errorf("RulesInLegacy in a namespace: %v before its legacy nat table, %v after; want false, true", before, after)
	}
}
