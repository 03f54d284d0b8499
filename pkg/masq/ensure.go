package masq

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
)

// Report lists, for people, what Ensure had to fix. It is empty when the
// rules were already in place.
type Report struct {
	Repairs []string
}

func (rep *Report) add(format string, args ...any) {
	rep.Repairs = append(rep.Repairs, fmt.Sprintf(format, args...))
}

// Ensure checks weft's chains and jumps and repairs whatever differs: each
// chain exists and holds exactly the desired rules in order, and each jump is
// present once in its builtin chain, first where the chain says so. Changes
// are ordered so that the desired rule is always in place before a wrong one
// is removed; there is no moment where pod traffic is matched by nothing of
// ours.
//
// Ensure re-reads a chain before every change, so a concurrent writer (another
// pod ADD, docker) costs extra steps rather than a wrong deletion. Surplus
// jumps in builtin chains are deleted by spec, which cannot remove another
// program's rule, except a surplus exact copy of a jump that must be first:
// that one is deleted by position, and a writer inserting above it between
// the read and the delete would lose a rule. Weft's own chains are also
// changed by position, so callers on one host that may run concurrently
// should still serialise their calls (weft does, under its node lock).
func Ensure(ipt IPTables, r Rules) (Report, error) {
	chains, err := desired(ipt, r)
	if err != nil {
		return Report{}, err
	}
	var (
		rep  Report
		errs []error
	)
	for _, c := range chains {
		if err := ensureChain(ipt, c, &rep); err != nil {
			errs = append(errs, err)
			continue // never jump to a chain whose content is unknown
		}
		if err := ensureJump(ipt, c, &rep); err != nil {
			errs = append(errs, err)
		}
	}
	return rep, errors.Join(errs...)
}

// EnsureFront is the cheap check behind a pod ADD: it reads the first rule
// of nat POSTROUTING and the rules of filter FORWARD, and when weft's jumps
// are where they belong it returns without further work. Otherwise it runs
// Ensure. It does not look inside weft's chains; the daemon's periodic
// Ensure does.
func EnsureFront(ipt IPTables, r Rules) (Report, error) {
	chains, err := desired(ipt, r)
	if err != nil {
		return Report{}, err
	}
	for _, c := range chains {
		if ok, err := jumpInPlace(ipt, c); err != nil || !ok {
			return Ensure(ipt, r)
		}
	}
	return Report{}, nil
}

// jumpInPlace reports whether c.Jump is the first rule of c.From (c.First)
// or one of its rules.
func jumpInPlace(ipt IPTables, c Chain) (bool, error) {
	if !c.First {
		specs, err := listRules(ipt, c.Table, c.From)
		return slices.ContainsFunc(specs, func(spec []string) bool { return slices.Equal(spec, c.Jump) }), err
	}
	line, err := firstRule(ipt, c.Table, c.From)
	if err != nil {
		return false, err
	}
	spec, ok, err := parseRule(line, c.From)
	return ok && slices.Equal(spec, c.Jump), err
}

// firstRule returns the first rule of chain, or "" when it has none.
// go-iptables v0.8.0 ListById indexes the command's output without checking
// its length, and iptables prints nothing for a missing position, so it
// panics with an index error on an empty chain; that panic means "no rule".
func firstRule(ipt IPTables, table, chain string) (line string, err error) {
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		if re, ok := p.(runtime.Error); ok && strings.Contains(re.Error(), "index out of range") {
			line, err = "", nil
			return
		}
		panic(p)
	}()
	return ipt.ListById(table, chain, 1)
}

// Check reports, without changing anything, how the rules differ from r.
// No problems and no error means the rules are in place.
func Check(ipt IPTables, r Rules) ([]string, error) {
	chains, err := desired(ipt, r)
	if err != nil {
		return nil, err
	}
	var problems []string
	for _, c := range chains {
		p, err := checkChain(ipt, c)
		if err != nil {
			return problems, err
		}
		problems = append(problems, p...)
	}
	return problems, nil
}

func checkChain(ipt IPTables, c Chain) ([]string, error) {
	var problems []string
	exists, err := ipt.ChainExists(c.Table, c.Name)
	if err != nil {
		return nil, fmt.Errorf("checking chain %s %s: %w", c.Table, c.Name, err)
	}
	if !exists {
		problems = append(problems, fmt.Sprintf("chain %s %s is missing", c.Table, c.Name))
	} else {
		actual, err := listRules(ipt, c.Table, c.Name)
		if err != nil {
			return nil, err
		}
		if !equalRules(actual, c.Rules) {
			problems = append(problems, fmt.Sprintf("chain %s %s holds %d rules that differ from the %d desired",
				c.Table, c.Name, len(actual), len(c.Rules)))
		}
	}
	parent, err := listRules(ipt, c.Table, c.From)
	if err != nil {
		return nil, err
	}
	jumps := 0
	for _, spec := range parent {
		if jumpsTo(spec, c.Name) {
			jumps++
		}
	}
	switch {
	case jumps == 0:
		problems = append(problems, fmt.Sprintf("%s %s has no jump to %s", c.Table, c.From, c.Name))
	case c.First && !slices.Equal(parent[0], c.Jump):
		problems = append(problems, fmt.Sprintf("jump to %s is not first in %s %s", c.Name, c.Table, c.From))
	}
	if jumps > 1 {
		problems = append(problems, fmt.Sprintf("%s %s has %d jumps to %s", c.Table, c.From, jumps, c.Name))
	}
	return problems, nil
}

// Remove deletes weft's jumps and chains. It is idempotent. Jumps are deleted
// by their spec, never by position, so a concurrent writer cannot make it
// delete someone else's rule.
func Remove(ipt IPTables) error {
	var errs []error
	for _, c := range ownChains {
		if err := removeChain(ipt, c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func removeChain(ipt IPTables, c Chain) error {
	parent, err := listRules(ipt, c.Table, c.From)
	if err != nil {
		return err
	}
	for _, spec := range parent {
		if !jumpsTo(spec, c.Name) {
			continue
		}
		if err := ipt.Delete(c.Table, c.From, spec...); err != nil {
			return fmt.Errorf("removing jump to %s from %s %s: %w", c.Name, c.Table, c.From, err)
		}
	}
	if err := ipt.ClearAndDeleteChain(c.Table, c.Name); err != nil {
		return fmt.Errorf("removing chain %s %s: %w", c.Table, c.Name, err)
	}
	return nil
}

// listRules returns the rule specs of a chain in order.
func listRules(ipt IPTables, table, chain string) ([][]string, error) {
	lines, err := ipt.List(table, chain)
	if err != nil {
		return nil, fmt.Errorf("listing %s %s: %w", table, chain, err)
	}
	return parseRules(lines, chain)
}
