package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-iptables/iptables"

	"github.com/weft-cni/weft/pkg/masq"
	"github.com/weft-cni/weft/pkg/route"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

// fakeRoutes is an in-memory route table.
type fakeRoutes struct {
	mu      sync.Mutex
	routes  map[netip.Prefix]route.Route
	listErr error // List fails with it while set
	probe   *lockProbe
}

var _ route.Programmer = (*fakeRoutes)(nil)

func newFakeRoutes(rs ...route.Route) *fakeRoutes {
	f := &fakeRoutes{routes: map[netip.Prefix]route.Route{}}
	for _, r := range rs {
		f.routes[r.Dst] = r
	}
	return f
}

func (f *fakeRoutes) List(network netip.Prefix) ([]route.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return nil, f.listErr
	}
	var out []route.Route
	for _, r := range f.routes {
		if network.Contains(r.Dst.Addr()) {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeRoutes) Replace(r route.Route) error {
	f.probe.check("route replace")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[r.Dst] = r
	return nil
}

func (f *fakeRoutes) Delete(r route.Route) error {
	f.probe.check("route delete")
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.routes, r.Dst)
	return nil
}

// gateway returns the gateway of the route to dst, or the zero address.
func (f *fakeRoutes) gateway(dst string) netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.routes[pfx(dst)].Gateway
}

func (f *fakeRoutes) has(dst string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.routes[pfx(dst)]
	return ok
}

// fakeIPT is an in-memory iptables holding rule specs in iptables -S form.
type fakeIPT struct {
	mu      sync.Mutex
	chains  map[string][][]string // "table/chain" -> rules
	failAll error
	probe   *lockProbe
}

var _ masq.IPTables = (*fakeIPT)(nil)

func newFakeIPT() *fakeIPT {
	f := &fakeIPT{chains: map[string][][]string{}}
	for _, c := range []string{"nat/PREROUTING", "nat/INPUT", "nat/OUTPUT", "nat/POSTROUTING", "filter/INPUT", "filter/FORWARD", "filter/OUTPUT"} {
		f.chains[c] = nil
	}
	return f
}

func (f *fakeIPT) Proto() iptables.Protocol { return iptables.ProtocolIPv4 }
func (f *fakeIPT) HasRandomFully() bool     { return true }

func (f *fakeIPT) ChainExists(table, chain string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failAll != nil {
		return false, f.failAll
	}
	_, ok := f.chains[table+"/"+chain]
	return ok, nil
}

func (f *fakeIPT) NewChain(table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.chains[table+"/"+chain]; ok {
		return fmt.Errorf("chain %s exists", chain)
	}
	f.chains[table+"/"+chain] = nil
	return nil
}

func (f *fakeIPT) ClearAndDeleteChain(table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.chains, table+"/"+chain)
	return nil
}

func (f *fakeIPT) List(table, chain string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failAll != nil {
		return nil, f.failAll
	}
	rules, ok := f.chains[table+"/"+chain]
	if !ok {
		return nil, fmt.Errorf("no chain %s", chain)
	}
	out := []string{"-N " + chain}
	for _, spec := range rules {
		out = append(out, "-A "+chain+" "+renderSpec(spec))
	}
	return out, nil
}

func (f *fakeIPT) ListById(table, chain string, id int) (string, error) {
	lines, err := f.List(table, chain)
	if err != nil {
		return "", err
	}
	if id >= len(lines) {
		return "", nil
	}
	return lines[id], nil
}

func (f *fakeIPT) Insert(table, chain string, pos int, spec ...string) error {
	f.probe.check("iptables insert")
	f.mu.Lock()
	defer f.mu.Unlock()
	key := table + "/" + chain
	rules, ok := f.chains[key]
	if !ok || pos < 1 || pos > len(rules)+1 {
		return fmt.Errorf("bad insert at %d into %s", pos, key)
	}
	f.chains[key] = slices.Insert(rules, pos-1, slices.Clone(spec))
	return nil
}

func (f *fakeIPT) Delete(table, chain string, spec ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := table + "/" + chain
	i := slices.IndexFunc(f.chains[key], func(r []string) bool { return slices.Equal(r, spec) })
	if i < 0 {
		return fmt.Errorf("no such rule in %s", key)
	}
	f.chains[key] = slices.Delete(f.chains[key], i, i+1)
	return nil
}

func (f *fakeIPT) DeleteById(table, chain string, id int) error {
	f.probe.check("iptables delete")
	f.mu.Lock()
	defer f.mu.Unlock()
	key := table + "/" + chain
	if id < 1 || id > len(f.chains[key]) {
		return fmt.Errorf("no rule %d in %s", id, key)
	}
	f.chains[key] = slices.Delete(f.chains[key], id-1, id)
	return nil
}

// rules returns a copy of a chain's rules, rendered.
func (f *fakeIPT) rules(table, chain string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, spec := range f.chains[table+"/"+chain] {
		out = append(out, renderSpec(spec))
	}
	return out
}

func (f *fakeIPT) insertRaw(table, chain string, pos int, spec ...string) {
	if err := f.Insert(table, chain, pos, spec...); err != nil {
		panic(err)
	}
}

func renderSpec(spec []string) string {
	words := make([]string, len(spec))
	for i, w := range spec {
		if strings.ContainsAny(w, " \"") {
			w = strconv.Quote(w)
		}
		words[i] = w
	}
	return strings.Join(words, " ")
}

// fakeNode records what the daemon asks of the host.
type fakeNode struct {
	mu         sync.Mutex
	ensured    []netip.Prefix
	marked     []netip.Prefix
	fileAtMark []bool // whether the subnet file existed at each mark
	path       string
	err        error
	probe      *lockProbe
}

var _ Node = (*fakeNode)(nil)

func (n *fakeNode) Ensure(file *subnetfile.File) error {
	n.probe.check("bridge setup")
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ensured = append(n.ensured, file.Lease())
	return n.err
}

func (n *fakeNode) MarkReady(file *subnetfile.File, _ time.Time) error {
	n.probe.check("bridge mark")
	n.mu.Lock()
	defer n.mu.Unlock()
	_, err := os.Stat(n.path)
	n.fileAtMark = append(n.fileAtMark, err == nil)
	n.marked = append(n.marked, file.Lease())
	return nil
}

func (n *fakeNode) marks() ([]netip.Prefix, []bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.marked), slices.Clone(n.fileAtMark)
}

// lockProbe is a node lock that records changes made without holding it.
type lockProbe struct {
	sem        chan struct{}
	mu         sync.Mutex
	violations []string
	takes      int
}

func newLockProbe() *lockProbe { return &lockProbe{sem: make(chan struct{}, 1)} }

func (p *lockProbe) lock(ctx context.Context) (func(), error) {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.mu.Lock()
	p.takes++
	p.mu.Unlock()
	return func() { <-p.sem }, nil
}

// check records what as a violation unless the lock is held; nil p checks nothing.
func (p *lockProbe) check(what string) {
	if p == nil {
		return
	}
	if len(p.sem) == 0 {
		p.mu.Lock()
		p.violations = append(p.violations, what)
		p.mu.Unlock()
	}
}

func (p *lockProbe) report() (takes int, violations []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.takes, slices.Clone(p.violations)
}
