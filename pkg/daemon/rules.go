package daemon

import (
	"context"
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/weft-cni/weft/pkg/masq"
	"github.com/weft-cni/weft/pkg/metrics"
)

// ruleKeeper checks weft's iptables rules every period and repairs what
// differs: a missing rule or chain, a duplicate, or another program's rule
// (docker's MASQUERADE) inserted above our jump.
type ruleKeeper struct {
	ipt     masq.IPTables
	clock   clockwork.Clock
	log     *slog.Logger
	metrics *metrics.Metrics
	state   *state
	ipMasq  bool
	period  time.Duration
	kick    chan struct{}
	lock    Locker // the node lock; nil for none
	// checked is called when a check's outcome differs from the last one's.
	checked func()

	installed bool // the rules were in place once: later changes are repairs
	lastErr   string
	lastOK    *bool
}

func (r *ruleKeeper) run(ctx context.Context) {
	t := r.clock.NewTicker(r.period)
	defer t.Stop()
	for {
		r.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		case <-r.kick:
		}
	}
}

// check runs one check and repair, once the network is known.
func (r *ruleKeeper) check(ctx context.Context) {
	network := r.state.clusterNetwork()
	if !network.IsValid() {
		return
	}
	var (
		rep masq.Report
		err error
	)
	if !withLock(ctx, r.lock, r.log, func() {
		rep, err = masq.Ensure(r.ipt, masq.Rules{Network: network, IPMasq: r.ipMasq})
	}) {
		return
	}
	for _, change := range rep.Repairs {
		if r.installed {
			r.log.Warn("repaired iptables rules", "change", change)
		} else {
			r.log.Info("set up iptables rules", "change", change)
		}
	}
	if r.installed {
		r.metrics.RuleRepairs(len(rep.Repairs))
	}
	if err != nil {
		r.metrics.ReconcileError(metrics.ErrRules)
		if msg := err.Error(); msg != r.lastErr {
			r.log.Error("iptables rules could not be repaired; retrying every resync", "error", err)
			r.lastErr = msg
		}
	} else {
		r.installed, r.lastErr = true, ""
	}
	r.state.setRules(err)
	if ok := err == nil; r.lastOK == nil || *r.lastOK != ok {
		r.lastOK = &ok
		r.checked()
	}
}
