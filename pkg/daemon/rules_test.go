package daemon

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/weft-cni/weft/pkg/lease"
	"github.com/weft-cni/weft/pkg/masq"
	"github.com/weft-cni/weft/pkg/metrics"
	"github.com/weft-cni/weft/pkg/subnetfile"
)

// dockerMasq is the rule restarting docker inserts at the top of POSTROUTING.
var dockerMasq = []string{"-s", "172.7.21.0/24", "!", "-o", "docker0", "-j", "MASQUERADE"}

const weftJump = `-m comment --comment weft -j WEFT-POSTRTG`

func newRuleRig(t *testing.T) (*ruleKeeper, *fakeIPT) {
	t.Helper()
	store := newFakeStore(t, "172.7.0.0/16")
	st := &state{}
	own := lease.Lease{Subnet: pfx("172.7.21.0/24"), Attrs: lease.Attrs{PublicIP: ip(selfIP)}}
	st.setLease(store.network, &own, subnetfile.ForLease(store.network.Network, own.Subnet, 1500, true))
	ipt := newFakeIPT()
	return &ruleKeeper{ipt: ipt, clock: clockwork.NewFakeClock(), log: discard, metrics: metrics.New(), state: st,
		ipMasq: true, period: DefaultIPTablesResync, kick: make(chan struct{}, 1), checked: func() {}}, ipt
}

func (r *ruleKeeper) repairs(t *testing.T) float64 {
	return metricValue(t, r.metrics.Registry(), "weft_rule_repairs_total")
}

func TestRulesInstalledThenRepaired(t *testing.T) {
	tests := []struct {
		name    string
		harm    func(*fakeIPT)
		repairs int
	}{
		{name: "docker's masquerade inserted above our jump", repairs: 1,
			harm: func(f *fakeIPT) { f.insertRaw("nat", "POSTROUTING", 1, dockerMasq...) }},
		{name: "our jump deleted", repairs: 1,
			harm: func(f *fakeIPT) { _ = f.DeleteById("nat", "POSTROUTING", 1) }},
		{name: "our jump duplicated", repairs: 1,
			harm: func(f *fakeIPT) {
				f.insertRaw("nat", "POSTROUTING", 2, strings.Fields(weftJump)...)
			}},
		{name: "our chain flushed", repairs: 1,
			harm: func(f *fakeIPT) {
				f.mu.Lock()
				f.chains["nat/WEFT-POSTRTG"] = nil
				f.mu.Unlock()
			}},
		{name: "nothing wrong", repairs: 0, harm: func(*fakeIPT) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ipt := newRuleRig(t)
			r.check(context.Background())
			if n := r.repairs(t); n != 0 {
				t.Errorf("first set-up counted as %v repairs", n)
			}
			want := ipt.rules("nat", "WEFT-POSTRTG")
			if len(want) != 4 {
				t.Fatalf("nat chain = %q, want the two marked-connection returns, the keep-source and masquerade rules", want)
			}
			tt.harm(ipt)
			r.check(context.Background())
			post := ipt.rules("nat", "POSTROUTING")
			if len(post) == 0 || post[0] != weftJump {
				t.Errorf("POSTROUTING = %q, want our jump first", post)
			}
			if n := countOf(post, weftJump); n != 1 {
				t.Errorf("%d jumps in POSTROUTING, want 1", n)
			}
			if got := ipt.rules("nat", "WEFT-POSTRTG"); !slices.Equal(got, want) {
				t.Errorf("nat chain = %q, want %q", got, want)
			}
			if n := r.repairs(t); (n > 0) != (tt.repairs > 0) {
				t.Errorf("repairs counted = %v, want %d", n, tt.repairs)
			}
			if ok, why := r.state.readiness(time.Now()); slices.ContainsFunc(why, func(s string) bool { return strings.Contains(s, "iptables") }) {
				t.Errorf("readiness %v %q mentions iptables after a repair", ok, why)
			}
			problems, err := masq.Check(ipt, masq.Rules{Network: pfx("172.7.0.0/16"), IPMasq: true})
			if err != nil || len(problems) > 0 {
				t.Errorf("masq.Check after repair: %q, %v", problems, err)
			}
		})
	}
}

func countOf(lines []string, s string) int {
	n := 0
	for _, l := range lines {
		if l == s {
			n++
		}
	}
	return n
}

func TestRulesFailureMakesUnready(t *testing.T) {
	r, ipt := newRuleRig(t)
	ipt.failAll = errors.New("iptables: permission denied (fake)")
	r.check(context.Background())
	_, why := r.state.readiness(time.Now())
	if !slices.ContainsFunc(why, func(s string) bool { return strings.Contains(s, "permission denied") }) {
		t.Errorf("readiness reasons %q do not name the iptables failure", why)
	}
	if n := metricValue(t, r.metrics.Registry(), "weft_reconcile_errors_total", "kind", "rules"); n != 1 {
		t.Errorf("rule errors = %v, want 1", n)
	}
	ipt.mu.Lock()
	ipt.failAll = nil
	ipt.mu.Unlock()
	r.check(context.Background())
	if _, why := r.state.readiness(time.Now()); slices.ContainsFunc(why, func(s string) bool { return strings.Contains(s, "iptables") }) {
		t.Errorf("readiness reasons %q after recovery", why)
	}
}

func TestRulesResyncPeriod(t *testing.T) {
	r, ipt := newRuleRig(t)
	clock := r.clock.(*clockwork.FakeClock)
	checked := make(chan struct{}, 100)
	r.checked = func() { checked <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.run(ctx) })
	defer func() {
		cancel()
		wg.Wait()
	}()
	<-checked // the first check set the rules up
	ipt.insertRaw("nat", "POSTROUTING", 1, dockerMasq...)
	eventually(t, "the repair within one resync period", func() bool {
		post := ipt.rules("nat", "POSTROUTING")
		return len(post) == 2 && post[0] == weftJump
	}, func() { clock.Advance(DefaultIPTablesResync) })
	eventually(t, "the repair counted", func() bool { return r.repairs(t) >= 1 }, nil)
}
