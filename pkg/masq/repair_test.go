package masq

import (
	"fmt"
	"slices"
	"testing"
)

// Rules other software keeps in the builtin chains, and jumps to our chains
// that are not c.Jump (left by an older weft, or added by hand).
var (
	dropSpec     = []string{"-s", "192.168.0.0/16", "-j", "DROP"}
	dropRule     = "-A FORWARD -s 192.168.0.0/16 -j DROP"
	staleFwd     = []string{"-j", ChainForward}
	staleFwdRule = "-A FORWARD -j WEFT-FWD"
	staleFwd2    = []string{"-m", "comment", "--comment", "weft-0.3", "-j", ChainForward}
	staleNAT     = []string{"-m", "comment", "--comment", "weft-0.3", "-j", ChainNAT}
	staleNAT2    = []string{"-j", ChainNAT}
	returnSpec   = []string{"-d", "10.96.0.0/12", "-j", "RETURN"}
)

// foreignSpec is the n-th rule another writer puts at the top of a chain.
func foreignSpec(n int) []string {
	return []string{"-s", fmt.Sprintf("10.%d.0.0/16", n), "-j", "ACCEPT"}
}

func foreignLine(chain string, n int) string { return fakeLine(chain, foreignSpec(n)) }

// setChain replaces the rules of a chain of f.
func setChain(t *testing.T, f *fakeIPT, table, chain string, specs ...[]string) {
	t.Helper()
	mustDo(t, f.ClearChain(table, chain))
	for i, spec := range specs {
		mustDo(t, f.Insert(table, chain, i+1, spec...))
	}
}

func chainOf(t *testing.T, name string) Chain {
	t.Helper()
	for _, c := range cluster.Chains(true) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no chain %s", name)
	return Chain{}
}

// writerBeforeDeletes makes another writer insert a foreign rule at the top
// of table chain just before each of the first n deletes Ensure makes there,
// after Ensure has read the chain. It returns the lines it inserted.
func writerBeforeDeletes(f *fakeIPT, table, chain string, n int) *[]string {
	var inserted []string
	f.beforeWrite = func(call, tb, ch string) {
		if tb != table || ch != chain || call == "Insert" || len(inserted) >= n {
			return
		}
		spec := foreignSpec(len(inserted) + 1)
		if err := f.Insert(table, chain, 1, spec...); err != nil {
			panic(err)
		}
		inserted = append(inserted, fakeLine(chain, spec))
	}
	return &inserted
}

// keepJump fails t if a write by anyone leaves the chain without c.Jump.
func keepJump(t *testing.T, f *fakeIPT, c Chain) {
	want := fakeLine(c.From, c.Jump)
	f.afterWrite = func() {
		if !slices.Contains(f.rules(c.Table, c.From), want) {
			t.Errorf("a write left %s %s without our jump: %q", c.Table, c.From, f.rules(c.Table, c.From))
		}
	}
}

// TestJumpDeleteRacesWriter: another program inserts a rule at the top of
// the builtin chain between Ensure's read and its delete of a surplus jump.
// Stale variants, and surplus exact copies of a jump that need not be first,
// are deleted by spec, so the foreign rules all survive; a delete by
// position would remove the rule that moved into that position.
func TestJumpDeleteRacesWriter(t *testing.T) {
	tests := []struct {
		name    string
		chain   string
		start   [][]string
		want    []string
		repairs []string
	}{
		{"stale variant, filter FORWARD", ChainForward,
			[][]string{jumpTo(ChainForward), dropSpec, staleFwd},
			[]string{foreignLine("FORWARD", 1), jumpFwd, dropRule},
			[]string{"removed stale jump to WEFT-FWD from filter FORWARD: -j WEFT-FWD"}},
		{"exact duplicate, filter FORWARD", ChainForward,
			[][]string{jumpTo(ChainForward), dropSpec, jumpTo(ChainForward)},
			[]string{foreignLine("FORWARD", 1), dropRule, jumpFwd},
			[]string{"removed duplicate jump to WEFT-FWD from filter FORWARD"}},
		// The foreign rule pushes our jump off the top, so it goes back
		// in there and the copy below is deleted by position; the writer
		// has stopped by then.
		{"stale variant, nat POSTROUTING", ChainNAT,
			[][]string{jumpTo(ChainNAT), dockerSpec, staleNAT},
			[]string{jumpNAT, foreignLine("POSTROUTING", 1), dockerRule},
			[]string{
				"removed stale jump to WEFT-POSTRTG from nat POSTROUTING: -m comment --comment weft-0.3 -j WEFT-POSTRTG",
				"inserted jump to WEFT-POSTRTG at top of nat POSTROUTING",
				"removed duplicate jump to WEFT-POSTRTG at position 3 of nat POSTROUTING",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := chainOf(t, tt.chain)
			f := newFakeIPT()
			mustEnsure(t, f, cluster)
			setChain(t, f, c.Table, c.From, tt.start...)
			inserted := writerBeforeDeletes(f, c.Table, c.From, 1)
			keepJump(t, f, c)

			rep := mustEnsure(t, f, cluster)
			if len(*inserted) != 1 {
				t.Fatalf("the other writer inserted %d rules, want 1", len(*inserted))
			}
			assertRules(t, f, c.Table, c.From, tt.want...)
			if !slices.Equal(rep.Repairs, tt.repairs) {
				t.Errorf("repairs = %q\nwant %q", rep.Repairs, tt.repairs)
			}
			f.beforeWrite, f.afterWrite = nil, nil
			if problems, err := Check(f, cluster); err != nil || len(problems) != 0 {
				t.Errorf("Check after repair = %q, %v", problems, err)
			}
		})
	}
}

// TestJumpDeletesBySpecUnderSteadyWriter: a writer inserting at the top
// before every delete cannot make Ensure remove its rules when no surplus
// jump needs a delete by position.
func TestJumpDeletesBySpecUnderSteadyWriter(t *testing.T) {
	c := chainOf(t, ChainForward)
	f := newFakeIPT()
	mustEnsure(t, f, cluster)
	j := jumpTo(ChainForward)
	setChain(t, f, c.Table, c.From, staleFwd, j, dropSpec, j, staleFwd2, j, staleFwd)
	inserted := writerBeforeDeletes(f, c.Table, c.From, maxSteps)
	keepJump(t, f, c)

	rep := mustEnsure(t, f, cluster)
	if len(*inserted) != 5 || len(rep.Repairs) != 5 {
		t.Errorf("%d foreign rules inserted, %d repairs %q; want 5 of each", len(*inserted), len(rep.Repairs), rep.Repairs)
	}
	want := slices.Clone(*inserted)
	slices.Reverse(want)
	assertRules(t, f, c.Table, c.From, append(want, dropRule, jumpFwd)...)
}

// TestJumpConverges: any mix of exact copies and stale variants of a jump
// ends with exactly c.Jump once (first where required), every foreign rule
// kept in order, in one step per surplus jump, and a delete by position
// only for an exact copy of a jump that must be first.
func TestJumpConverges(t *testing.T) {
	type start struct {
		name  string
		rules func(c Chain, stale, stale2, other []string) [][]string
	}
	starts := []start{
		{"exact x3", func(c Chain, _, _, other []string) [][]string {
			return [][]string{c.Jump, other, c.Jump, returnSpec, c.Jump}
		}},
		{"exact x3, none first", func(c Chain, _, _, other []string) [][]string {
			return [][]string{other, c.Jump, c.Jump, returnSpec, c.Jump}
		}},
		{"stale mixed", func(c Chain, stale, stale2, other []string) [][]string {
			return [][]string{stale, c.Jump, other, stale2, c.Jump, stale}
		}},
		{"exact first, stale below", func(c Chain, stale, stale2, other []string) [][]string {
			return [][]string{c.Jump, stale2, other, stale, returnSpec}
		}},
		{"stale only", func(c Chain, stale, stale2, other []string) [][]string {
			return [][]string{other, stale, stale2}
		}},
	}
	chains := []struct {
		name          string
		stale, stale2 []string
		other         []string
	}{
		{ChainNAT, staleNAT, staleNAT2, dockerSpec},
		{ChainForward, staleFwd, staleFwd2, dropSpec},
	}
	for _, ch := range chains {
		for _, st := range starts {
			t.Run(ch.name+"/"+st.name, func(t *testing.T) {
				c := chainOf(t, ch.name)
				f := newFakeIPT()
				mustEnsure(t, f, cluster)
				initial := st.rules(c, ch.stale, ch.stale2, ch.other)
				setChain(t, f, c.Table, c.From, initial...)

				var foreign []string
				exact, stale := 0, 0
				for _, spec := range initial {
					switch {
					case slices.Equal(spec, c.Jump):
						exact++
					case jumpsTo(spec, c.Name):
						stale++
					default:
						foreign = append(foreign, fakeLine(c.From, spec))
					}
				}
				// What each surplus jump must cost.
				wantByPos, wantBySpec, wantInserts := 0, stale, 0
				switch {
				case c.First && slices.Equal(initial[0], c.Jump):
					wantByPos = exact - 1
				case c.First:
					wantByPos, wantInserts = exact, 1
				case exact == 0:
					wantInserts = 1
				default:
					wantBySpec += exact - 1
				}

				calls := map[string]int{}
				f.beforeWrite = func(call, table, chain string) {
					if table == c.Table && chain == c.From {
						calls[call]++
					}
				}
				rep := mustEnsure(t, f, cluster)
				want := map[string]int{"DeleteById": wantByPos, "Delete": wantBySpec, "Insert": wantInserts}
				for call, n := range want {
					if calls[call] != n {
						t.Errorf("%s calls = %d, want %d (all: %v)", call, calls[call], n, calls)
					}
				}
				if n := wantByPos + wantBySpec + wantInserts; len(rep.Repairs) != n {
					t.Errorf("repairs = %q, want %d", rep.Repairs, n)
				}

				got := f.rules(c.Table, c.From)
				jump := fakeLine(c.From, c.Jump)
				var jumps, others []string
				for _, line := range got {
					if line == jump || slices.ContainsFunc(initial, func(spec []string) bool {
						return jumpsTo(spec, c.Name) && fakeLine(c.From, spec) == line
					}) {
						jumps = append(jumps, line)
					} else {
						others = append(others, line)
					}
				}
				if !slices.Equal(jumps, []string{jump}) {
					t.Errorf("jumps left = %q, want only %q", jumps, jump)
				}
				if c.First && got[0] != jump {
					t.Errorf("first rule = %q, want %q", got[0], jump)
				}
				if !slices.Equal(others, foreign) {
					t.Errorf("foreign rules = %q, want %q", others, foreign)
				}

				f.beforeWrite = nil
				f.writes = 0
				if rep := mustEnsure(t, f, cluster); len(rep.Repairs) != 0 || f.writes != 0 {
					t.Errorf("second Ensure repaired %q with %d writes", rep.Repairs, f.writes)
				}
			})
		}
	}
}

// TestFakeDeleteFirstMatch: like iptables -D, the fake deletes only the
// first rule that matches the spec exactly, after normalising it.
func TestFakeDeleteFirstMatch(t *testing.T) {
	f := newFakeIPT()
	mustEnsure(t, f, cluster)
	setChain(t, f, "filter", "FORWARD", dropSpec, staleFwd, dropSpec)
	mustDo(t, f.Delete("filter", "FORWARD", "--source", "192.168.7.1/16", "--jump", "DROP"))
	assertRules(t, f, "filter", "FORWARD", staleFwdRule, dropRule)
	if err := f.Delete("filter", "FORWARD", "-s", "192.168.0.0/16", "-j", "ACCEPT"); err == nil {
		t.Error("Delete of a spec that only partly matches succeeded")
	}
	assertRules(t, f, "filter", "FORWARD", staleFwdRule, dropRule)
}

// TestJumpDeleteFallsBackToPosition: a stale jump that iptables will not
// delete by the spec it printed (a match that does not read back as it
// prints) is deleted at its position after a fresh read, instead of
// failing every repair; the other rules stay.
func TestJumpDeleteFallsBackToPosition(t *testing.T) {
	f := refusedStaleJump(t)
	assertStaleJumpGoneByPosition(t, f)
}

// refusedStaleJump is filter FORWARD holding a foreign rule, a stale jump
// that iptables refuses to delete by the spec it printed, and our jump.
func refusedStaleJump(t *testing.T) *fakeIPT {
	t.Helper()
	c := chainOf(t, ChainForward)
	f := newFakeIPT()
	mustEnsure(t, f, cluster)
	setChain(t, f, c.Table, c.From, dropSpec, staleFwd2, jumpTo(ChainForward))
	f.failDelete = func(_, _ string, spec []string) error {
		if slices.Equal(spec, staleFwd2) {
			return fmt.Errorf("iptables: Bad rule (does a matching rule exist in that chain?). (exit status 1)")
		}
		return nil
	}
	return f
}

// assertStaleJumpGoneByPosition runs Ensure on a refusedStaleJump chain and
// checks that the stale jump went by position and nothing else did.
func assertStaleJumpGoneByPosition(t *testing.T, f *fakeIPT) {
	t.Helper()
	rep := mustEnsure(t, f, cluster)
	want := []string{`removed stale jump to WEFT-FWD at position 2 of filter FORWARD: -m comment --comment weft-0.3 -j WEFT-FWD`}
	if !slices.Equal(rep.Repairs, want) {
		t.Errorf("repairs %q, want %q", rep.Repairs, want)
	}
	assertRules(t, f, "filter", "FORWARD", dropRule, jumpFwd)
}

// byHandle replaces deleteByHandle for a test: fn answers each call.
func byHandle(t *testing.T, fn func(ipt IPTables, table, chain string, pos int, target string) (bool, error)) {
	saved := deleteByHandle
	deleteByHandle = fn
	t.Cleanup(func() { deleteByHandle = saved })
}

// TestJumpDeleteByHandle: a surplus copy of the first jump goes by its
// handle when nf_tables has the chain; when the rule at the position read
// is no longer the jump, the chain is read again, and when nf_tables keeps
// disagreeing at the same position (it is not where this iptables keeps
// its rules), the copy is deleted by position after all.
func TestJumpDeleteByHandle(t *testing.T) {
	c := chainOf(t, ChainNAT)
	dup := func(t *testing.T) *fakeIPT {
		f := newFakeIPT()
		mustEnsure(t, f, cluster)
		setChain(t, f, c.Table, c.From, c.Jump, returnSpec, c.Jump)
		return f
	}
	want := []string{fakeLine(c.From, c.Jump), fakeLine(c.From, returnSpec)}

	t.Run("by handle", func(t *testing.T) {
		f := dup(t)
		var calls []int
		byHandle(t, func(ipt IPTables, table, chain string, pos int, target string) (bool, error) {
			calls = append(calls, pos)
			if target != ChainNAT {
				return true, fmt.Errorf("asked to delete a jump to %s", target)
			}
			return true, ipt.DeleteById(table, chain, pos) // the fake's stand-in for the handle
		})
		mustEnsure(t, f, cluster)
		assertRules(t, f, c.Table, c.From, want...)
		if !slices.Equal(calls, []int{3}) {
			t.Errorf("deletes by handle at %v, want one at 3", calls)
		}
	})
	t.Run("a writer inserts above before the delete", func(t *testing.T) {
		f := dup(t)
		inserted := writerBeforeDeletes(f, c.Table, c.From, 1)
		byHandle(t, func(_ IPTables, table, chain string, pos int, target string) (bool, error) {
			f.before("DeleteByHandle", table, chain) // the other writer acts after our read
			fc := f.tables[table][chain]
			if pos > len(fc.rules) || !jumpsTo(fc.rules[pos-1], target) {
				return true, errJumpMoved
			}
			fc.rules = slices.Delete(fc.rules, pos-1, pos) // the handle names this rule only
			return true, nil
		})
		mustEnsure(t, f, cluster)
		if len(*inserted) != 1 {
			t.Fatalf("the other writer inserted %d rules, want 1", len(*inserted))
		}
		assertRules(t, f, c.Table, c.From, fakeLine(c.From, c.Jump), foreignLine(c.From, 1), fakeLine(c.From, returnSpec))
	})
	t.Run("nf_tables disagrees", func(t *testing.T) {
		f := dup(t)
		calls := 0
		byHandle(t, func(IPTables, string, string, int, string) (bool, error) {
			calls++
			return true, errJumpMoved
		})
		mustEnsure(t, f, cluster)
		assertRules(t, f, c.Table, c.From, want...)
		if calls != 2 {
			t.Errorf("%d deletes by handle before falling back to the position, want 2", calls)
		}
	})
}

// TestStaleJumpFallbackWhenNFTablesDisagrees: a stale jump iptables will
// not delete by its printed spec goes by position; when nf_tables does not
// hold what iptables shows (iptables-legacy beside a non-empty nf_tables
// chain, or a writer that moved the rule), the handle's errJumpMoved reads
// the chain again and, repeated at the same position, deletes by position,
// as for a surplus copy of the first jump, rather than failing the repair.
func TestStaleJumpFallbackWhenNFTablesDisagrees(t *testing.T) {
	f := refusedStaleJump(t)
	calls := 0
	byHandle(t, func(IPTables, string, string, int, string) (bool, error) {
		calls++
		return true, errJumpMoved
	})
	assertStaleJumpGoneByPosition(t, f)
	if calls != 2 {
		t.Errorf("%d deletes by handle before falling back to the position, want 2", calls)
	}
}
