package masq

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// fakeIPT is an in-memory iptables: ordered rules per table and chain, with
// rule specs normalised the way iptables -S prints them (addresses get a
// prefix length, networks are masked, long options take their short form,
// words with spaces are quoted). Errors follow iptables: inserting past the
// end, deleting what is not there, creating an existing chain or deleting a
// chain still jumped to all fail.
type fakeIPT struct {
	randomFully bool
	tables      map[string]map[string]*fakeChain

	calls  int // every call that would exec iptables
	writes int // calls that change rules or chains
	// afterWrite, when set, runs after every successful change.
	afterWrite func()
	// beforeWrite, when set, runs at the start of every Insert, Delete and
	// DeleteById, named by call: another writer acting between the caller's
	// read and its change. Its own calls do not run it again.
	beforeWrite func(call, table, chain string)
	inHook      bool
	// failInsert, when set, makes Insert fail for matching calls.
	failInsert func(table, chain string, pos int) error
	// failDelete, when set, makes Delete (by spec) fail for matching calls.
	failDelete func(table, chain string, spec []string) error
}

type fakeChain struct {
	builtin bool
	rules   [][]string
}

var _ IPTables = (*fakeIPT)(nil)

func newFakeIPT() *fakeIPT {
	f := &fakeIPT{randomFully: true, tables: map[string]map[string]*fakeChain{}}
	builtins := map[string][]string{
		"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
		"filter": {"INPUT", "FORWARD", "OUTPUT"},
	}
	for table, chains := range builtins {
		f.tables[table] = map[string]*fakeChain{}
		for _, c := range chains {
			f.tables[table][c] = &fakeChain{builtin: true}
		}
	}
	return f
}

func (f *fakeIPT) Proto() iptables.Protocol { return iptables.ProtocolIPv4 }
func (f *fakeIPT) HasRandomFully() bool     { return f.randomFully }

func (f *fakeIPT) chain(table, chain string) (*fakeChain, error) {
	c, ok := f.tables[table][chain]
	if !ok {
		return nil, fmt.Errorf("iptables: chain %s %s does not exist (exit status 1)", table, chain)
	}
	return c, nil
}

func (f *fakeIPT) wrote() {
	f.writes++
	if f.afterWrite != nil {
		f.afterWrite()
	}
}

func (f *fakeIPT) before(call, table, chain string) {
	if f.beforeWrite == nil || f.inHook {
		return
	}
	f.inHook = true
	defer func() { f.inHook = false }()
	f.beforeWrite(call, table, chain)
}

func (f *fakeIPT) ChainExists(table, chain string) (bool, error) {
	f.calls++
	_, ok := f.tables[table][chain]
	return ok, nil
}

func (f *fakeIPT) NewChain(table, chain string) error {
	f.calls++
	if _, ok := f.tables[table][chain]; ok {
		return fmt.Errorf("iptables: chain %s already exists (exit status 1)", chain)
	}
	f.tables[table][chain] = &fakeChain{}
	f.wrote()
	return nil
}

// ClearChain is not part of IPTables; tests use it to flush a chain.
func (f *fakeIPT) ClearChain(table, chain string) error {
	c, err := f.chain(table, chain)
	if err != nil {
		return err
	}
	c.rules = nil
	return nil
}

func (f *fakeIPT) ClearAndDeleteChain(table, chain string) error {
	f.calls++
	c, ok := f.tables[table][chain]
	if !ok {
		return nil
	}
	if c.builtin {
		return fmt.Errorf("iptables: cannot delete builtin chain %s", chain)
	}
	for name, other := range f.tables[table] {
		for _, spec := range other.rules {
			if jumpsTo(spec, chain) {
				return fmt.Errorf("iptables: chain %s is referenced from %s (exit status 4)", chain, name)
			}
		}
	}
	delete(f.tables[table], chain)
	f.wrote()
	return nil
}

func (f *fakeIPT) List(table, chain string) ([]string, error) {
	f.calls++
	c, err := f.chain(table, chain)
	if err != nil {
		return nil, err
	}
	head := "-N " + chain
	if c.builtin {
		head = "-P " + chain + " ACCEPT"
	}
	lines := []string{head}
	for _, spec := range c.rules {
		lines = append(lines, fakeLine(chain, spec))
	}
	return lines, nil
}

// ListById behaves as go-iptables v0.8.0 does: iptables prints nothing for a
// position past the end, and go-iptables then indexes an empty slice.
func (f *fakeIPT) ListById(table, chain string, id int) (string, error) {
	f.calls++
	c, err := f.chain(table, chain)
	if err != nil {
		return "", err
	}
	var lines []string
	if id >= 1 && id <= len(c.rules) {
		lines = append(lines, fakeLine(chain, c.rules[id-1]))
	}
	return lines[0], nil
}

func (f *fakeIPT) Insert(table, chain string, pos int, rulespec ...string) error {
	f.before("Insert", table, chain)
	f.calls++
	if f.failInsert != nil {
		if err := f.failInsert(table, chain, pos); err != nil {
			return err
		}
	}
	c, err := f.chain(table, chain)
	if err != nil {
		return err
	}
	if pos < 1 || pos > len(c.rules)+1 {
		return errors.New("iptables: Index of insertion too big. (exit status 1)")
	}
	spec, err := normalise(rulespec)
	if err != nil {
		return err
	}
	if to, ok := target(spec); ok && f.tables[table][to] == nil && !isTarget(to) {
		return fmt.Errorf("iptables: no chain/target/match by that name: %s", to)
	}
	c.rules = slices.Insert(c.rules, pos-1, spec)
	f.wrote()
	return nil
}

// Delete removes the first rule that is exactly rulespec, as iptables -D
// does.
func (f *fakeIPT) Delete(table, chain string, rulespec ...string) error {
	f.before("Delete", table, chain)
	f.calls++
	if f.failDelete != nil {
		if err := f.failDelete(table, chain, rulespec); err != nil {
			return err
		}
	}
	c, err := f.chain(table, chain)
	if err != nil {
		return err
	}
	spec, err := normalise(rulespec)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(c.rules, func(r []string) bool { return slices.Equal(r, spec) })
	if i < 0 {
		return errors.New("iptables: Bad rule (does a matching rule exist in that chain?). (exit status 1)")
	}
	c.rules = slices.Delete(c.rules, i, i+1)
	f.wrote()
	return nil
}

func (f *fakeIPT) DeleteById(table, chain string, id int) error {
	f.before("DeleteById", table, chain)
	f.calls++
	c, err := f.chain(table, chain)
	if err != nil {
		return err
	}
	if id < 1 || id > len(c.rules) {
		return errors.New("iptables: Index of deletion too big. (exit status 1)")
	}
	c.rules = slices.Delete(c.rules, id-1, id)
	f.wrote()
	return nil
}

// rules returns the -S lines of a chain without its -P/-N line, for
// assertions; it is not counted as a call.
func (f *fakeIPT) rules(table, chain string) []string {
	c, ok := f.tables[table][chain]
	if !ok {
		return nil
	}
	var lines []string
	for _, spec := range c.rules {
		lines = append(lines, fakeLine(chain, spec))
	}
	return lines
}

func isTarget(name string) bool {
	return slices.Contains([]string{"ACCEPT", "DROP", "RETURN", "MASQUERADE", "SNAT", "DNAT"}, name)
}

func target(spec []string) (string, bool) {
	i := slices.Index(spec, "-j")
	if i < 0 || i+1 >= len(spec) {
		return "", false
	}
	return spec[i+1], true
}

var longOptions = map[string]string{
	"--source": "-s", "--src": "-s", "--destination": "-d", "--dst": "-d",
	"--jump": "-j", "--match": "-m", "--in-interface": "-i", "--out-interface": "-o",
}

// normalise rewrites a rule spec the way iptables stores and prints it.
func normalise(rulespec []string) ([]string, error) {
	spec := make([]string, len(rulespec))
	for i, w := range rulespec {
		if short, ok := longOptions[w]; ok {
			w = short
		}
		if i > 0 && (spec[i-1] == "-s" || spec[i-1] == "-d") {
			p, err := parseNet(w)
			if err != nil {
				return nil, fmt.Errorf("iptables v1.8.9: host/network %q not found", w)
			}
			w = p.String()
		}
		spec[i] = w
	}
	return spec, nil
}

func parseNet(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// fakeLine prints a rule as iptables -S does, quoting what needs it.
func fakeLine(chain string, spec []string) string {
	words := []string{"-A", chain}
	for _, w := range spec {
		if strings.ContainsAny(w, " \"\\") {
			w = `"` + strings.ReplaceAll(strings.ReplaceAll(w, `\`, `\\`), `"`, `\"`) + `"`
		}
		words = append(words, w)
	}
	return strings.Join(words, " ")
}
