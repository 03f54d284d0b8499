package masq

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-iptables/iptables"
)

var cluster = Rules{Network: netip.MustParsePrefix("172.7.0.0/16"), IPMasq: true}

const (
	jumpNAT     = "-A POSTROUTING -m comment --comment weft -j WEFT-POSTRTG"
	jumpFwd     = "-A FORWARD -m comment --comment weft -j WEFT-FWD"
	kubeProxy   = `-A WEFT-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "weft: kube-proxy masquerades what it marked" -j RETURN`
	portmap     = `-A WEFT-POSTRTG -m mark --mark 0x2000/0x2000 -m comment --comment "weft: portmap masquerades what it marked" -j RETURN`
	keepSource  = `-A WEFT-POSTRTG -s 172.7.0.0/16 -d 172.7.0.0/16 -m comment --comment "weft: pod to pod keeps source ip" -j ACCEPT`
	masquerade  = `-A WEFT-POSTRTG -s 172.7.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "weft: pod to outside masqueraded" -j MASQUERADE --random-fully`
	fromPods    = `-A WEFT-FWD -s 172.7.0.0/16 -m comment --comment "weft: forward from pods" -j ACCEPT`
	toPods      = `-A WEFT-FWD -d 172.7.0.0/16 -m comment --comment "weft: forward to pods" -j ACCEPT`
	dockerRule  = "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"
	foreignRule = "-A WEFT-FWD -s 10.0.0.0/8 -j ACCEPT"
)

var dockerSpec = []string{"-s", "172.17.0.0/16", "!", "-o", "docker0", "-j", "MASQUERADE"}

// assertRules compares a chain's rules, as iptables -S prints them.
func assertRules(t *testing.T, f *fakeIPT, table, chain string, want ...string) {
	t.Helper()
	if got := f.rules(table, chain); !slices.Equal(got, want) {
		t.Errorf("%s %s:\n got %q\nwant %q", table, chain, got, want)
	}
}

// assertDesired checks the complete desired state for cluster.
func assertDesired(t *testing.T, f *fakeIPT, extraPostrouting ...string) {
	t.Helper()
	assertRules(t, f, "nat", "POSTROUTING", append([]string{jumpNAT}, extraPostrouting...)...)
	assertRules(t, f, "nat", "WEFT-POSTRTG", kubeProxy, portmap, keepSource, masquerade)
	assertRules(t, f, "filter", "FORWARD", jumpFwd)
	assertRules(t, f, "filter", "WEFT-FWD", fromPods, toPods)
}

func mustEnsure(t *testing.T, f *fakeIPT, r Rules) Report {
	t.Helper()
	rep, err := Ensure(f, r)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	return rep
}

func hasRepair(rep Report, substr string) bool {
	return slices.ContainsFunc(rep.Repairs, func(s string) bool { return strings.Contains(s, substr) })
}

func TestChains(t *testing.T) {
	tests := []struct {
		name        string
		rules       Rules
		randomFully bool
		wantNAT     []string // last word of each nat rule
		wantMasq    string   // the masquerade rule rendered, "" for none
	}{
		{"masq with random-fully", cluster, true, []string{"RETURN", "RETURN", "ACCEPT", "--random-fully"},
			`-s 172.7.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "weft: pod to outside masqueraded" -j MASQUERADE --random-fully`},
		{"masq without random-fully", cluster, false, []string{"RETURN", "RETURN", "ACCEPT", "MASQUERADE"},
			`-s 172.7.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "weft: pod to outside masqueraded" -j MASQUERADE`},
		{"no masq", Rules{Network: cluster.Network}, true, []string{"RETURN", "RETURN", "ACCEPT"}, ""},
		{"unmasked network", Rules{Network: netip.MustParsePrefix("172.7.3.4/16"), IPMasq: true}, false,
			[]string{"RETURN", "RETURN", "ACCEPT", "MASQUERADE"},
			`-s 172.7.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "weft: pod to outside masqueraded" -j MASQUERADE`},
		{"ipv6", Rules{Network: netip.MustParsePrefix("fd00:7::/48"), IPMasq: true}, false,
			[]string{"RETURN", "RETURN", "ACCEPT", "MASQUERADE"},
			`-s fd00:7::/48 ! -d ff00::/8 -m comment --comment "weft: pod to outside masqueraded" -j MASQUERADE`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chains := tt.rules.Chains(tt.randomFully)
			if len(chains) != 2 || chains[0].Name != ChainNAT || chains[1].Name != ChainForward {
				t.Fatalf("chains = %+v", chains)
			}
			nat := chains[0]
			var last []string
			for _, spec := range nat.Rules {
				last = append(last, spec[len(spec)-1])
			}
			if !slices.Equal(last, tt.wantNAT) {
				t.Errorf("nat rules end with %q, want %q", last, tt.wantNAT)
			}
			if tt.wantMasq != "" && render(nat.Rules[3]) != tt.wantMasq {
				t.Errorf("masquerade rule = %s\nwant %s", render(nat.Rules[3]), tt.wantMasq)
			}
			if nat.From != "POSTROUTING" || chains[1].From != "FORWARD" {
				t.Errorf("jumps from %s and %s", nat.From, chains[1].From)
			}
		})
	}
}

func TestEnsureFresh(t *testing.T) {
	f := newFakeIPT()
	rep := mustEnsure(t, f, cluster)
	assertDesired(t, f)
	for _, want := range []string{"created chain nat WEFT-POSTRTG", "created chain filter WEFT-FWD",
		"inserted jump to WEFT-POSTRTG at top of nat POSTROUTING", "inserted jump to WEFT-FWD at top of filter FORWARD"} {
		if !hasRepair(rep, want) {
			t.Errorf("report %q lacks %q", rep.Repairs, want)
		}
	}
}

func TestEnsureIdempotent(t *testing.T) {
	f := newFakeIPT()
	mustEnsure(t, f, cluster)

	f.calls, f.writes = 0, 0
	rep := mustEnsure(t, f, cluster)
	if len(rep.Repairs) != 0 || f.writes != 0 {
		t.Errorf("second Ensure repaired %q with %d writes", rep.Repairs, f.writes)
	}
	// Per chain: ChainExists, List of the chain, List of its builtin.
	if f.calls != 6 {
		t.Errorf("second Ensure made %d iptables calls, want 6", f.calls)
	}
	assertDesired(t, f)

	f.calls = 0
	rep, err := EnsureFront(f, cluster)
	if err != nil || len(rep.Repairs) != 0 || f.writes != 0 {
		t.Fatalf("EnsureFront = %q, %v with %d writes", rep.Repairs, err, f.writes)
	}
	if f.calls != 2 {
		t.Errorf("EnsureFront made %d iptables calls, want 2", f.calls)
	}
}

func TestEnsureFrontDockerInFront(t *testing.T) {
	f := newFakeIPT()
	mustEnsure(t, f, cluster)
	if err := f.Insert("nat", "POSTROUTING", 1, dockerSpec...); err != nil {
		t.Fatal(err)
	}

	// Once our jump is first it must stay first: no moment where docker's
	// MASQUERADE sees pod to pod traffic, and never two jumps left behind.
	ours := false
	f.afterWrite = func() {
		first := f.rules("nat", "POSTROUTING")[0]
		if ours && first != jumpNAT {
			t.Errorf("our jump left the front during repair: first rule %q", first)
		}
		ours = first == jumpNAT
	}
	rep, err := EnsureFront(f, cluster)
	if err != nil {
		t.Fatal(err)
	}
	assertDesired(t, f, dockerRule)
	want := []string{
		"inserted jump to WEFT-POSTRTG at top of nat POSTROUTING",
		"removed duplicate jump to WEFT-POSTRTG at position 3 of nat POSTROUTING",
	}
	if !slices.Equal(rep.Repairs, want) {
		t.Errorf("repairs = %q, want %q", rep.Repairs, want)
	}
}

// TestForwardJumpLeftBehindOthers: rules other software puts on top of
// filter FORWARD (a NetworkPolicy engine, kube-proxy) stay ahead of our
// jump, and a missing jump is appended after them.
func TestForwardJumpLeftBehindOthers(t *testing.T) {
	policy := []string{"-m", "comment", "--comment", "policy", "-j", "POLICY-FWD"}
	const policyRule = "-A FORWARD -m comment --comment policy -j POLICY-FWD"
	f := newFakeIPT()
	mustEnsure(t, f, cluster)
	mustDo(t, f.NewChain("filter", "POLICY-FWD"))
	mustDo(t, f.Insert("filter", "FORWARD", 1, policy...))
	for _, ensure := range []func(IPTables, Rules) (Report, error){EnsureFront, Ensure} {
		if rep, err := ensure(f, cluster); err != nil || len(rep.Repairs) != 0 {
			t.Fatalf("with a policy rule above our jump: repairs %q, %v; want none", rep.Repairs, err)
		}
	}
	if problems, err := Check(f, cluster); err != nil || len(problems) != 0 {
		t.Fatalf("Check with a policy rule above our jump: %q, %v", problems, err)
	}
	assertRules(t, f, "filter", "FORWARD", policyRule, jumpFwd)

	mustDo(t, f.Delete("filter", "FORWARD", jumpTo(ChainForward)...))
	rep := mustEnsure(t, f, cluster)
	if !slices.Equal(rep.Repairs, []string{"appended jump to WEFT-FWD to filter FORWARD"}) {
		t.Errorf("repairs = %q, want the jump appended", rep.Repairs)
	}
	assertRules(t, f, "filter", "FORWARD", policyRule, jumpFwd)
}

func TestEnsureFrontFresh(t *testing.T) {
	// Empty builtin chains: ListById panics in go-iptables, which
	// EnsureFront must treat as "not ours" and repair.
	f := newFakeIPT()
	if _, err := EnsureFront(f, cluster); err != nil {
		t.Fatal(err)
	}
	assertDesired(t, f)
}

func TestEnsureRepairs(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, f *fakeIPT)
		repair string
		extra  []string // foreign POSTROUTING rules that stay, after ours
	}{
		{"duplicate jumps", func(t *testing.T, f *fakeIPT) {
			mustDo(t, f.Insert("nat", "POSTROUTING", 2, dockerSpec...))
			mustDo(t, f.Insert("nat", "POSTROUTING", 3, jumpTo(ChainNAT)...))
			mustDo(t, f.Insert("filter", "FORWARD", 2, jumpTo(ChainForward)...))
		}, "removed duplicate jump to WEFT-POSTRTG at position 3 of nat POSTROUTING", []string{dockerRule}},
		{"jump without comment", func(t *testing.T, f *fakeIPT) {
			mustDo(t, f.Delete("nat", "POSTROUTING", jumpTo(ChainNAT)...))
			mustDo(t, f.Insert("nat", "POSTROUTING", 1, "-j", ChainNAT))
		}, "inserted jump to WEFT-POSTRTG at top of nat POSTROUTING", nil},
		{"flushed chain", func(t *testing.T, f *fakeIPT) {
			mustDo(t, f.ClearChain("nat", ChainNAT))
		}, "rewrote chain nat WEFT-POSTRTG (inserted 4, removed 0 rules)", nil},
		{"deleted chain", func(t *testing.T, f *fakeIPT) {
			mustDo(t, f.Delete("filter", "FORWARD", jumpTo(ChainForward)...))
			mustDo(t, f.ClearChain("filter", ChainForward))
			mustDo(t, f.ClearAndDeleteChain("filter", ChainForward))
		}, "created chain filter WEFT-FWD", nil},
		{"foreign rule in our chain", func(t *testing.T, f *fakeIPT) {
			mustDo(t, f.Insert("filter", ChainForward, 1, "--source", "10.0.0.0/8", "-j", "ACCEPT"))
			mustDo(t, f.Insert("filter", ChainForward, 4, "-d", "10.1.2.3", "-j", "DROP"))
		}, "rewrote chain filter WEFT-FWD (inserted 2, removed 4 rules)", nil},
		{"rules swapped", func(t *testing.T, f *fakeIPT) {
			mustDo(t, f.DeleteById("nat", ChainNAT, 3))
			mustDo(t, f.Insert("nat", ChainNAT, 4, cluster.Chains(true)[0].Rules[2]...))
		}, "rewrote chain nat WEFT-POSTRTG (inserted 1, removed 1 rules)", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeIPT()
			mustEnsure(t, f, cluster)
			tt.damage(t, f)
			if problems, err := Check(f, cluster); err != nil || len(problems) == 0 {
				t.Errorf("Check before repair = %q, %v; want problems", problems, err)
			}
			rep := mustEnsure(t, f, cluster)
			if !hasRepair(rep, tt.repair) {
				t.Errorf("repairs %q lack %q", rep.Repairs, tt.repair)
			}
			assertDesired(t, f, tt.extra...)
			if problems, err := Check(f, cluster); err != nil || len(problems) != 0 {
				t.Errorf("Check after repair = %q, %v", problems, err)
			}
		})
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestEnsureIPMasqOff(t *testing.T) {
	f := newFakeIPT()
	noMasq := Rules{Network: cluster.Network}
	mustEnsure(t, f, noMasq)
	assertRules(t, f, "nat", "WEFT-POSTRTG", kubeProxy, portmap, keepSource)
	assertRules(t, f, "nat", "POSTROUTING", jumpNAT)

	// Turning masquerading on and off again rewrites the chain in place.
	mustEnsure(t, f, cluster)
	assertRules(t, f, "nat", "WEFT-POSTRTG", kubeProxy, portmap, keepSource, masquerade)
	rep := mustEnsure(t, f, noMasq)
	if want := "rewrote chain nat WEFT-POSTRTG (inserted 0, removed 1 rules)"; !slices.Equal(rep.Repairs, []string{want}) {
		t.Errorf("repairs = %q, want %q", rep.Repairs, want)
	}
	assertRules(t, f, "nat", "WEFT-POSTRTG", kubeProxy, portmap, keepSource)
}

func TestEnsureWithoutRandomFully(t *testing.T) {
	f := newFakeIPT()
	f.randomFully = false
	mustEnsure(t, f, cluster)
	assertRules(t, f, "nat", "WEFT-POSTRTG", kubeProxy, portmap, keepSource, strings.TrimSuffix(masquerade, " --random-fully"))
}

func TestEnsureInvalid(t *testing.T) {
	f := newFakeIPT()
	for _, r := range []Rules{{}, {Network: netip.MustParsePrefix("fd00::/64")}} {
		if _, err := Ensure(f, r); err == nil {
			t.Errorf("Ensure(%v) succeeded", r.Network)
		}
		if _, err := Check(f, r); err == nil {
			t.Errorf("Check(%v) succeeded", r.Network)
		}
	}
	if f.calls != 0 {
		t.Errorf("invalid rules made %d iptables calls", f.calls)
	}
}

func TestEnsureInsertFails(t *testing.T) {
	f := newFakeIPT()
	denied := errors.New("permission denied (you must be root)")
	f.failInsert = func(table, chain string, _ int) error {
		if table == "nat" {
			return denied
		}
		return nil
	}
	_, err := Ensure(f, cluster)
	if !errors.Is(err, denied) {
		t.Fatalf("Ensure error = %v, want %v", err, denied)
	}
	if !strings.Contains(err.Error(), "at position 1 of nat WEFT-POSTRTG") {
		t.Errorf("error lacks context: %v", err)
	}
	// The nat failure must not stop the filter rules, and no jump may point
	// at the incomplete nat chain.
	assertRules(t, f, "filter", "WEFT-FWD", fromPods, toPods)
	assertRules(t, f, "nat", "POSTROUTING")
}

func TestCheck(t *testing.T) {
	f := newFakeIPT()
	problems, err := Check(f, cluster)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"chain nat WEFT-POSTRTG is missing", "nat POSTROUTING has no jump to WEFT-POSTRTG",
		"chain filter WEFT-FWD is missing", "filter FORWARD has no jump to WEFT-FWD",
	}
	if !slices.Equal(problems, want) {
		t.Errorf("fresh: problems = %q, want %q", problems, want)
	}
	if f.writes != 0 {
		t.Errorf("Check wrote %d times", f.writes)
	}

	mustEnsure(t, f, cluster)
	mustDo(t, f.Insert("nat", "POSTROUTING", 1, dockerSpec...))
	mustDo(t, f.Insert("nat", "POSTROUTING", 1, jumpTo(ChainNAT)...))
	problems, _ = Check(f, cluster)
	want = []string{"nat POSTROUTING has 2 jumps to WEFT-POSTRTG"}
	if !slices.Equal(problems, want) {
		t.Errorf("duplicate: problems = %q, want %q", problems, want)
	}
	mustDo(t, f.DeleteById("nat", "POSTROUTING", 1))
	problems, _ = Check(f, cluster)
	want = []string{"jump to WEFT-POSTRTG is not first in nat POSTROUTING"}
	if !slices.Equal(problems, want) {
		t.Errorf("docker in front: problems = %q, want %q", problems, want)
	}
}

func TestRemove(t *testing.T) {
	f := newFakeIPT()
	mustEnsure(t, f, cluster)
	mustDo(t, f.Insert("nat", "POSTROUTING", 1, dockerSpec...))
	mustDo(t, f.Insert("nat", "POSTROUTING", 3, jumpTo(ChainNAT)...))
	mustDo(t, f.Insert("filter", "FORWARD", 2, "-j", ChainForward))

	for range 2 { // idempotent
		if err := Remove(f); err != nil {
			t.Fatal(err)
		}
		assertRules(t, f, "nat", "POSTROUTING", dockerRule)
		assertRules(t, f, "filter", "FORWARD")
		for _, c := range []struct{ table, chain string }{{"nat", ChainNAT}, {"filter", ChainForward}} {
			if ok, _ := f.ChainExists(c.table, c.chain); ok {
				t.Errorf("chain %s %s still exists", c.table, c.chain)
			}
		}
	}
}

func TestSplitQuoted(t *testing.T) {
	tests := []struct {
		line string
		want []string
	}{
		{`-A X -j ACCEPT`, []string{"-A", "X", "-j", "ACCEPT"}},
		{`-A X -m comment --comment "a b" -j ACCEPT`, []string{"-A", "X", "-m", "comment", "--comment", "a b", "-j", "ACCEPT"}},
		{`-A X --comment "a \"q\" b"`, []string{"-A", "X", "--comment", `a "q" b`}},
		{`-A X --comment "x\\y"`, []string{"-A", "X", "--comment", `x\y`}},
		{`-A X --comment ""`, []string{"-A", "X", "--comment", ""}},
	}
	for _, tt := range tests {
		got, err := splitQuoted(tt.line)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("splitQuoted(%q) = %q, %v; want %q", tt.line, got, err, tt.want)
		}
		if line := "-A X " + render(got[2:]); line != tt.line {
			t.Errorf("render round trip: %q, want %q", line, tt.line)
		}
	}
	if _, err := splitQuoted(`-A X --comment "open`); err == nil {
		t.Error("unterminated quote accepted")
	}
}

func FuzzSplitQuoted(f *testing.F) {
	f.Add(`-A X -m comment --comment "a \"q\" b" -j ACCEPT`)
	f.Fuzz(func(t *testing.T, word string) {
		line := "-A X " + render([]string{"-m", "comment", "--comment", word})
		got, err := splitQuoted(line)
		if err != nil || len(got) != 6 || got[5] != word {
			t.Fatalf("splitQuoted(%q) = %q, %v", line, got, err)
		}
	})
}

// The fake reports IPv4; an IPv6 client must refuse an IPv4 network.
type ipv6Fake struct{ *fakeIPT }

func (ipv6Fake) Proto() iptables.Protocol { return iptables.ProtocolIPv6 }

func TestFamilyMismatch(t *testing.T) {
	if _, err := Ensure(ipv6Fake{newFakeIPT()}, cluster); err == nil || !strings.Contains(err.Error(), "other IP family") {
		t.Errorf("Ensure with ip6tables for an IPv4 network: %v", err)
	}
}
