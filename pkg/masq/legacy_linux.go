package masq

import (
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
)

// RulesInLegacy reports whether weft's rules live in x_tables, as
// iptables-legacy makes them: the caller's namespace has an x_tables nat
// table and weft's nat chain is not in nf_tables. Such rules cannot be read
// in-process as JumpsInPlace reads nf_tables, so the per-pod check leaves
// them to the daemon's periodic check and the plugin's peer sync rather
// than start an iptables process on every ADD. An x_tables nat table of
// some other program (a legacy kube-proxy) beside weft's nf_tables rules
// does not count. A weft chain deleted from nf_tables (`nft flush ruleset`)
// beside such a table reads as legacy too; the daemon's check restores it.
func RulesInLegacy() bool {
	data, err := os.ReadFile("/proc/thread-self/net/ip_tables_names") // the calling thread's namespace
	if err != nil || !slices.Contains(strings.Fields(string(data)), "nat") {
		return false
	}
	conn, err := nftables.New()
	if err != nil {
		return false
	}
	defer conn.CloseLasting()
	_, err = conn.ListChain(&nftables.Table{Name: TableNAT, Family: nftables.TableFamilyIPv4}, ChainNAT)
	return err != nil // no such chain in nf_tables (a dump would not say)
}
