package masq

import (
	"fmt"
	"slices"
)

// maxSteps bounds one repair, so that a writer fighting over the same chain
// makes Ensure fail instead of spin.
const maxSteps = 64

// step is one change towards the desired chain: insert spec at pos, or
// delete the rule at pos (which held spec when the chain was read).
type step struct {
	insert bool
	pos    int
	spec   []string
}

func (s step) same(o step) bool {
	return s.insert == o.insert && s.pos == o.pos && slices.Equal(s.spec, o.spec)
}

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
			if s.insert {
				inserted++
			}
		}
		rep.add("rewrote chain %s %s (inserted %d, removed %d rules)",
			c.Table, c.Name, inserted, len(done)-inserted)
	}
	return err
}

func planChain(want [][]string) planner {
	return func(actual [][]string) (step, bool) {
		for i, spec := range want {
			if i >= len(actual) || !slices.Equal(actual[i], spec) {
				return step{insert: true, pos: i + 1, spec: spec}, true
			}
		}
		if n := len(actual); n > len(want) {
			return step{pos: n, spec: actual[n-1]}, true
		}
		return step{}, false
	}
}

// ensureJump leaves exactly one jump to c.Name in c.From, c.Jump: first
// when c.First (the new jump goes in at the top first, stale copies are
// deleted from the bottom up after), else the first jump found, or c.Jump
// appended when there is none.
func ensureJump(ipt IPTables, c Chain, rep *Report) error {
	done, err := converge(ipt, c.Table, c.From, planJump(c))
	for _, s := range done {
		switch {
		case s.insert && s.pos == 1:
			rep.add("inserted jump to %s at top of %s %s", c.Name, c.Table, c.From)
		case s.insert:
			rep.add("appended jump to %s to %s %s", c.Name, c.Table, c.From)
		default:
			rep.add("removed duplicate jump to %s at position %d of %s %s", c.Name, s.pos, c.Table, c.From)
		}
	}
	return err
}

func planJump(c Chain) planner {
	return func(actual [][]string) (step, bool) {
		keep := slices.IndexFunc(actual, func(spec []string) bool { return slices.Equal(spec, c.Jump) })
		switch {
		case c.First && keep != 0:
			return step{insert: true, pos: 1, spec: c.Jump}, true
		case keep < 0:
			return step{insert: true, pos: len(actual) + 1, spec: c.Jump}, true
		}
		for i := len(actual) - 1; i >= 0; i-- {
			if i != keep && jumpsTo(actual[i], c.Name) {
				return step{pos: i + 1, spec: actual[i]}, true
			}
		}
		return step{}, false
	}
}

// converge reads the chain, applies the step plan picks, and repeats until
// plan is satisfied. Reading before every step keeps positions current when
// someone else writes the chain meanwhile. A failed step is retried once
// after a fresh read; failing again the same way is an error.
func converge(ipt IPTables, table, chain string, plan planner) ([]step, error) {
	var (
		done   []step
		failed *step
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
		if err := apply(ipt, table, chain, s); err != nil {
			if failed != nil && failed.same(s) {
				return done, err
			}
			failed = &s
			continue
		}
		failed = nil
		done = append(done, s)
	}
	return done, fmt.Errorf("repairing %s %s: still changing after %d steps", table, chain, maxSteps)
}

func apply(ipt IPTables, table, chain string, s step) error {
	if s.insert {
		if err := ipt.Insert(table, chain, s.pos, s.spec...); err != nil {
			return fmt.Errorf("inserting rule %q at position %d of %s %s: %w", render(s.spec), s.pos, table, chain, err)
		}
		return nil
	}
	if err := ipt.DeleteById(table, chain, s.pos); err != nil {
		return fmt.Errorf("deleting rule %q at position %d of %s %s: %w", render(s.spec), s.pos, table, chain, err)
	}
	return nil
}
