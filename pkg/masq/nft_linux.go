package masq

import (
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// JumpsFirst reports, in-process over netlink, whether weft's jumps are the
// first rules of nat POSTROUTING and filter FORWARD as iptables-nft stores
// them. It is the per-pod fast check: when it says yes, no iptables process
// is started. Any doubt (legacy iptables, a missing table, a netlink error)
// answers false, and the caller falls back to EnsureFront.
func JumpsFirst() bool {
	conn, err := nftables.New()
	if err != nil {
		return false
	}
	defer conn.CloseLasting()
	for _, c := range []struct{ table, chain, target string }{
		{TableNAT, "POSTROUTING", ChainNAT},
		{TableFilter, "FORWARD", ChainForward},
	} {
		rules, err := conn.GetRules(&nftables.Table{Name: c.table, Family: nftables.TableFamilyIPv4}, &nftables.Chain{Name: c.chain})
		if err != nil || len(rules) == 0 || !nftJumpsTo(rules[0], c.target) {
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
