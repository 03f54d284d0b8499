// Package masq programs the iptables rules behind DESIGN invariant 4: pod to
// pod traffic keeps its source IP, pod to outside traffic is masqueraded to
// the node, no rule is duplicated, and weft's rules stay in front of rules
// that other software (docker) inserts.
//
// The rules live in chains of weft's own (nat WEFT-POSTRTG, filter WEFT-FWD),
// each reached by a single jump from its builtin chain. The nat jump must be
// the first rule of POSTROUTING (ahead of docker's masquerade); the filter
// jump need only be in FORWARD, after what NetworkPolicy engines and
// kube-proxy put there, as flannel's is.
package masq

import (
	"fmt"
	"net/netip"

	"github.com/coreos/go-iptables/iptables"
)

// IPTables is the part of go-iptables that masq uses, so that tests can
// check whole rule sets against an in-memory fake without root.
type IPTables interface {
	Proto() iptables.Protocol
	HasRandomFully() bool
	ChainExists(table, chain string) (bool, error)
	NewChain(table, chain string) error
	ClearAndDeleteChain(table, chain string) error
	List(table, chain string) ([]string, error)
	ListById(table, chain string, id int) (string, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	Delete(table, chain string, rulespec ...string) error
	DeleteById(table, chain string, id int) error
}

var _ IPTables = (*iptables.IPTables)(nil)

// Tables and chains weft uses.
const (
	TableNAT    = "nat"
	TableFilter = "filter"

	ChainNAT     = "WEFT-POSTRTG"
	ChainForward = "WEFT-FWD"
)

// Comments on weft's rules; iptables -S shows them, so operators can tell
// what each rule is for.
const (
	commentJump       = "weft"
	commentKeepSource = "weft: pod to pod keeps source ip"
	commentKubeProxy  = "weft: kube-proxy masquerades what it marked"
	commentPortmap    = "weft: portmap masquerades what it marked"
	commentMasquerade = "weft: pod to outside masqueraded"
	commentFromPods   = "weft: forward from pods"
	commentToPods     = "weft: forward to pods"
)

// Marks with which other software asks for a connection to be masqueraded
// even between pods (a NodePort or hairpin to a Service endpoint, a hostPort
// hairpin): kube-proxy's masquerade bit (--iptables-masquerade-bit, 14 by
// default, as flannel assumes too) and the CNI portmap plugin's (13).
const (
	markKubeProxy = "0x4000/0x4000"
	markPortmap   = "0x2000/0x2000"
)

// Multicast ranges are never masqueraded.
var (
	multicast4 = netip.MustParsePrefix("224.0.0.0/4")
	multicast6 = netip.MustParsePrefix("ff00::/8")
)

// Rules describes the rules one node needs.
type Rules struct {
	// Network is the cluster network, e.g. 172.7.0.0/16. Its family must be
	// the family of the IPTables the rules are applied with.
	Network netip.Prefix
	// IPMasq masquerades traffic from pods to outside Network.
	IPMasq bool
}

// Chain is one of weft's chains: the rules it must hold, in order, and the
// jump to it from the builtin chain From: its first rule when First, else
// anywhere (appended when missing).
type Chain struct {
	Table string
	Name  string
	From  string
	First bool
	Jump  []string
	Rules [][]string
}

// Chains returns the desired content of weft's chains and their jumps, nat
// first. Rule specs are written the way iptables -S prints them, so that
// they compare equal to listed rules. randomFully adds --random-fully to the
// MASQUERADE rule (IPTables.HasRandomFully).
func (r Rules) Chains(randomFully bool) []Chain {
	n := r.Network.Masked().String()
	// Marked connections go on to the marker's own MASQUERADE rule later in
	// POSTROUTING; everything else from pod to pod is accepted here, ahead
	// of rules such as docker's that would masquerade it.
	nat := [][]string{
		{"-m", "mark", "--mark", markKubeProxy, "-m", "comment", "--comment", commentKubeProxy, "-j", "RETURN"},
		{"-m", "mark", "--mark", markPortmap, "-m", "comment", "--comment", commentPortmap, "-j", "RETURN"},
		{"-s", n, "-d", n, "-m", "comment", "--comment", commentKeepSource, "-j", "ACCEPT"},
	}
	if r.IPMasq {
		masq := []string{"-s", n, "!", "-d", multicastFor(r.Network).String(),
			"-m", "comment", "--comment", commentMasquerade, "-j", "MASQUERADE"}
		if randomFully {
			masq = append(masq, "--random-fully")
		}
		nat = append(nat, masq)
	}
	fwd := [][]string{
		{"-s", n, "-m", "comment", "--comment", commentFromPods, "-j", "ACCEPT"},
		{"-d", n, "-m", "comment", "--comment", commentToPods, "-j", "ACCEPT"},
	}
	return []Chain{
		{Table: TableNAT, Name: ChainNAT, From: "POSTROUTING", First: true, Jump: jumpTo(ChainNAT), Rules: nat},
		{Table: TableFilter, Name: ChainForward, From: "FORWARD", Jump: jumpTo(ChainForward), Rules: fwd},
	}
}

// ownChains names weft's chains independently of any Rules, for Remove.
var ownChains = Rules{Network: netip.MustParsePrefix("0.0.0.0/0")}.Chains(false)

func jumpTo(chain string) []string {
	return []string{"-m", "comment", "--comment", commentJump, "-j", chain}
}

func multicastFor(network netip.Prefix) netip.Prefix {
	if network.Addr().Is4() {
		return multicast4
	}
	return multicast6
}

// desired validates r against ipt and returns the chains to program.
func desired(ipt IPTables, r Rules) ([]Chain, error) {
	if !r.Network.IsValid() {
		return nil, fmt.Errorf("masquerade rules: invalid cluster network %q", r.Network)
	}
	is4 := r.Network.Addr().Is4()
	if p := ipt.Proto(); (p == iptables.ProtocolIPv4) != is4 {
		return nil, fmt.Errorf("masquerade rules for %s: iptables client is for the other IP family", r.Network)
	}
	return r.Chains(ipt.HasRandomFully()), nil
}
