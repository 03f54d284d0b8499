package masq

import (
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
