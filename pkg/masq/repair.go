package masq

import (
	"errors"
	"fmt"
	"slices"

	"github.com/coreos/go-iptables/iptables"
)

// maxSteps bounds one repair, so that a writer fighting over the same chain
// makes Ensure fail instead of spin.
const maxSteps = 64

// op is what a step does.
type op int

const (
	opInsert     op = iota // insert spec at pos
	opDeleteAt             // delete the rule at pos, which held spec when the chain was read
	opDeleteSpec           // delete the first rule that is exactly spec, wherever it is now
)

// step is one change towards the desired chain. An opDeleteAt can hit
// another program's rule if that program writes the chain between our read
// and the delete; an opDeleteSpec cannot, since it only ever removes a rule
// that is exactly spec.
type step struct {
	op   op
	pos  int // opInsert, opDeleteAt
	spec []string
	// target, for a delete of a jump in a builtin chain, is the chain it
	// jumps to: an opDeleteAt then goes by the rule's nf_tables handle after
	// checking that the rule at pos still jumps there (deleteJumpByHandle).
	target string
	// byPosition makes an opDeleteAt plain iptables -D <pos>.
	byPosition bool
}

func (s step) same(o step) bool {
	return s.op == o.op && s.pos == o.pos && slices.Equal(s.spec, o.spec)
}

// errJumpMoved: the rule at a delete's position is no longer the jump read
// there; the chain is read again.
var errJumpMoved = errors.New("the rule at that position is no longer the jump read there")

// planner picks the next step for a chain's current rules; ok is false when
// the chain is as desired.
type planner func(actual [][]string) (s step, ok bool)

// ensureChain makes chain c exist and hold exactly c.Rules in order. Desired
// rules are inserted at their position first and surplus rules are deleted
// from the bottom after, so the desired rules always match first.
func ensureChain(ipt IPTables, c Chain, rep *Report) error {
	exists, err := ipt.ChainExists(c.Table, c.Name)
	if err != nil {
		return fmt.Errorf("checking chain %s %s: %w", c.Table, c.Name, err)
	}
	if !exists {
		if err := ipt.NewChain(c.Table, c.Name); err != nil {
			return fmt.Errorf("creating chain %s %s: %w", c.Table, c.Name, err)
		}
		rep.add("created chain %s %s", c.Table, c.Name)
	}
	done, err := converge(ipt, c.Table, c.Name, planChain(c.Rules))
	if len(done) > 0 && exists {
		inserted := 0
		for _, s := range done {
			if s.op == opInsert {
				inserted++
			}
		}
		rep.add("rewrote chain %s %s (inserted %d, removed %d rules)",
			c.Table, c.Name, inserted, len(done)-inserted)
	}
	return err
}

// planChain deletes by position: weft's own chains are written only by weft,
// under its node lock, so nobody moves their rules between the read and the
// delete. (Builtin chains are another matter; see planJump.)
func planChain(want [][]string) planner {
	return func(actual [][]string) (step, bool) {
		for i, spec := range want {
			if i >= len(actual) || !slices.Equal(actual[i], spec) {
				return step{op: opInsert, pos: i + 1, spec: spec}, true
			}
		}
		if n := len(actual); n > len(want) {
			return step{op: opDeleteAt, pos: n, spec: actual[n-1]}, true
		}
		return step{}, false
	}
}

// ensureJump leaves exactly one jump to c.Name in c.From, c.Jump: first
// when c.First (the new jump goes in at the top first, stale copies are
// deleted from the bottom up after), else one of the exact copies found
// (deleting surplus copies by spec removes the upper ones), or c.Jump
// appended when there is none.
func ensureJump(ipt IPTables, c Chain, rep *Report) error {
	done, err := converge(ipt, c.Table, c.From, planJump(c))
	for _, s := range done {
		switch {
		case s.op == opInsert && s.pos == 1:
			rep.add("inserted jump to %s at top of %s %s", c.Name, c.Table, c.From)
		case s.op == opInsert:
			rep.add("appended jump to %s to %s %s", c.Name, c.Table, c.From)
		case s.op == opDeleteAt && slices.Equal(s.spec, c.Jump):
			rep.add("removed duplicate jump to %s at position %d of %s %s", c.Name, s.pos, c.Table, c.From)
		case s.op == opDeleteAt:
			rep.add("removed stale jump to %s at position %d of %s %s: %s", c.Name, s.pos, c.Table, c.From, render(s.spec))
		case slices.Equal(s.spec, c.Jump):
			rep.add("removed duplicate jump to %s from %s %s", c.Name, c.Table, c.From)
		default:
			rep.add("removed stale jump to %s from %s %s: %s", c.Name, c.Table, c.From, render(s.spec))
		}
	}
	return err
}

// planJump plans the jump in a builtin chain, which other software (docker,
// kube-proxy, a NetworkPolicy engine) writes at any time, so surplus jumps
// are deleted by spec wherever that is correct:
//   - a jump that differs from c.Jump (a stale variant, from an older weft
//     or by hand) is never the one kept, so deleting its first match is right;
//   - a surplus exact copy of c.Jump when c.First is false: deleting by spec
//     removes the first copy and another exact copy remains, which is as good
//     (its position does not matter), and the number of jumps still drops by
//     one each step.
//
// Only a surplus exact copy of c.Jump when c.First is true is deleted by
// position: by spec would remove the copy at the top, the next read would
// insert c.Jump at the top again, and the repair would never end. That
// delete follows a fresh read (converge reads before every step) and, with
// iptables-nft, goes by the rule's nf_tables handle once the rule at that
// position is seen to be our jump still (deleteByHandle), so another writer
// inserting above meanwhile cannot lose a rule. With iptables-legacy it is
// iptables -D <position>, and that writer would.
func planJump(c Chain) planner {
	return func(actual [][]string) (step, bool) {
		keep := slices.IndexFunc(actual, func(spec []string) bool { return slices.Equal(spec, c.Jump) })
		switch {
		case c.First && keep != 0:
			return step{op: opInsert, pos: 1, spec: c.Jump}, true
		case keep < 0:
			return step{op: opInsert, pos: len(actual) + 1, spec: c.Jump}, true
		}
		for i := len(actual) - 1; i >= 0; i-- {
			if i == keep || !jumpsTo(actual[i], c.Name) {
				continue
			}
			if c.First && slices.Equal(actual[i], c.Jump) {
				return step{op: opDeleteAt, pos: i + 1, spec: actual[i], target: c.Name}, true
			}
			return step{op: opDeleteSpec, pos: i + 1, spec: actual[i], target: c.Name}, true
		}
		return step{}, false
	}
}

// converge reads the chain, applies the step plan picks, and repeats until
// plan is satisfied. Reading before every step keeps positions current when
// someone else writes the chain meanwhile. A failed step is retried once
// after a fresh read; failing again the same way is an error, except:
//   - a delete by spec: a rule whose printed form iptables does not take
//     back (a match module that prints differently from how it parses) is
//     from then on deleted at the position it holds in the read just made;
//   - a delete at a position whose rule nf_tables twice says is not the
//     jump read there (errJumpMoved): nf_tables is not where this iptables
//     keeps its rules, so iptables -D <position> deletes it.
func converge(ipt IPTables, table, chain string, plan planner) ([]step, error) {
	var (
		done   []step
		failed *step
		atPos  [][]string // specs iptables would not delete by spec
	)
	for range maxSteps {
		actual, err := listRules(ipt, table, chain)
		if err != nil {
			return done, err
		}
		s, ok := plan(actual)
		if !ok {
			return done, nil
		}
		if s.op == opDeleteSpec && slices.ContainsFunc(atPos, func(spec []string) bool { return slices.Equal(spec, s.spec) }) {
			s.op = opDeleteAt
		}
		if err := apply(ipt, table, chain, s); err != nil {
			if failed == nil || !failed.same(s) {
				failed = &s
				continue
			}
			switch {
			case s.op == opDeleteSpec:
				atPos = append(atPos, s.spec)
				failed = nil
				continue // read again, then delete at its position
			case s.op == opDeleteAt && errors.Is(err, errJumpMoved):
				// The same position read twice, and nf_tables still
				// disagrees: it is not where this iptables keeps its rules.
				s.byPosition = true
			default:
				return done, err
			}
			if errAt := apply(ipt, table, chain, s); errAt != nil {
				return done, errors.Join(err, errAt)
			}
		}
		failed = nil
		done = append(done, s)
	}
	return done, fmt.Errorf("repairing %s %s: still changing after %d steps", table, chain, maxSteps)
}

func apply(ipt IPTables, table, chain string, s step) error {
	switch s.op {
	case opInsert:
		if err := ipt.Insert(table, chain, s.pos, s.spec...); err != nil {
			return fmt.Errorf("inserting rule %q at position %d of %s %s: %w", render(s.spec), s.pos, table, chain, err)
		}
	case opDeleteSpec:
		if err := ipt.Delete(table, chain, s.spec...); err != nil {
			return fmt.Errorf("deleting rule %q from %s %s: %w", render(s.spec), table, chain, err)
		}
	case opDeleteAt:
		if s.target != "" && !s.byPosition {
			handled, err := deleteByHandle(ipt, table, chain, s.pos, s.target)
			if handled {
				if err != nil {
					return fmt.Errorf("deleting rule %q at position %d of %s %s: %w", render(s.spec), s.pos, table, chain, err)
				}
				return nil
			}
		}
		if err := ipt.DeleteById(table, chain, s.pos); err != nil {
			return fmt.Errorf("deleting rule %q at position %d of %s %s: %w", render(s.spec), s.pos, table, chain, err)
		}
	default:
		return fmt.Errorf("unknown step %d on %s %s", s.op, table, chain)
	}
	return nil
}

// deleteByHandle is deleteJumpByHandle when ipt runs the iptables binary of
// the caller's namespace, whose nf_tables rules it reads; for anything else
// (a test's fake) it handles nothing. Tests replace it.
var deleteByHandle = func(ipt IPTables, table, chain string, pos int, target string) (bool, error) {
	if _, ok := ipt.(*iptables.IPTables); !ok {
		return false, nil
	}
	return deleteJumpByHandle(table, chain, pos, target)
}
