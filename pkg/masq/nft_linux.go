package masq

import (
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// JumpsInPlace reports, in-process over netlink, whether weft's jumps are
// where they belong as iptables-nft stores them: the first rule of nat
// POSTROUTING, and a rule of filter FORWARD. It is the per-pod fast check:
// when it says yes, no iptables process is started. Any doubt (legacy
// iptables, a missing table, a netlink error) answers false, and the caller
// falls back to EnsureFront.
func JumpsInPlace() bool {
	conn, err := nftables.New()
	if err != nil {
		return false
	}
	defer conn.CloseLasting()
	for _, c := range ownChains {
		rules, err := conn.GetRules(&nftables.Table{Name: c.Table, Family: nftables.TableFamilyIPv4}, &nftables.Chain{Name: c.From})
		if err != nil || len(rules) == 0 {
			return false
		}
		if c.First {
			rules = rules[:1]
		}
		if !slices.ContainsFunc(rules, func(r *nftables.Rule) bool { return nftJumpsTo(r, c.Name) }) {
			return false
		}
	}
	return true
}

func nftJumpsTo(r *nftables.Rule, chain string) bool {
	for _, e := range r.Exprs {
		if v, ok := e.(*expr.Verdict); ok {
			return v.Kind == expr.VerdictJump && v.Chain == chain
		}
	}
	return false
}

// deleteJumpByHandle deletes the pos-th rule (from 1) of table chain as
// iptables-nft keeps it in nf_tables, if that rule jumps (or goes) to
// target, by its handle: another program writing the chain shifts
// positions, never handles, so only that rule can go. handled is false
// when nf_tables holds no such chain (iptables-legacy): the caller deletes
// by position then. errJumpMoved means the rule at pos is not such a jump
// (the chain changed since it was read, or nf_tables is not where the
// caller's iptables keeps it).
func deleteJumpByHandle(table, chain string, pos int, target string) (handled bool, err error) {
	conn, err := nftables.New()
	if err != nil {
		return false, nil
	}
	defer conn.CloseLasting()
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyIPv4}
	c := &nftables.Chain{Name: chain, Table: t}
	rules, err := conn.GetRules(t, c)
	if err != nil || len(rules) == 0 {
		return false, nil
	}
	if pos < 1 || pos > len(rules) || !nftBranchesTo(rules[pos-1], target) {
		return true, errJumpMoved
	}
	handle := rules[pos-1].Handle
	if err := conn.DelRule(&nftables.Rule{Table: t, Chain: c, Handle: handle}); err != nil {
		return true, fmt.Errorf("deleting rule handle %d of %s %s: %w", handle, table, chain, err)
	}
	if err := conn.Flush(); err != nil {
		return true, fmt.Errorf("deleting rule handle %d of %s %s: %w", handle, table, chain, err)
	}
	return true, nil
}

// nftBranchesTo reports whether r ends in a jump or a goto to chain.
func nftBranchesTo(r *nftables.Rule, chain string) bool {
	for _, e := range r.Exprs {
		if v, ok := e.(*expr.Verdict); ok {
			return (v.Kind == expr.VerdictJump || v.Kind == expr.VerdictGoto) && v.Chain == chain
		}
	}
	return false
}
