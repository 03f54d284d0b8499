// Package metrics holds the node agent's Prometheus metrics, in a registry of
// its own so that tests and several daemons in one process never collide.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "weft"

// Reasons a watch of the subnet leases ended and the daemon listed them again.
const (
	WatchCompacted = "compacted" // the watched revision was compacted away
	WatchError     = "error"     // the watch failed (etcd gone, leader lost)
	WatchPeriodic  = "periodic"  // the re-list period passed
)

// Kinds of reconcile error.
const (
	ErrLease  = "lease"  // acquiring or keeping the node's lease
	ErrList   = "list"   // listing the leases in etcd
	ErrRoutes = "routes" // programming routes
	ErrRules  = "rules"  // checking or repairing iptables rules
	ErrNode   = "node"   // bridge, forwarding, subnet file
)

// Metrics are the daemon's metrics. The zero value is not usable: use New.
type Metrics struct {
	reg *prometheus.Registry

	leaseExpiry     prometheus.Gauge
	leaseHeld       prometheus.Gauge
	leaseAcquired   prometheus.Counter
	peers           prometheus.Gauge
	routes          prometheus.Gauge
	routeChanges    *prometheus.CounterVec
	reconcileErrors *prometheus.CounterVec
	watchRestarts   *prometheus.CounterVec
	ruleRepairs     prometheus.Counter
	unreachable     prometheus.Gauge
	ready           prometheus.Gauge
	fullSync        prometheus.Histogram
}

// New returns the metrics, registered with a new registry that also holds
// the Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		leaseExpiry: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "lease_expiry_timestamp_seconds",
			Help: "When the node's subnet lease expires unless renewed, as a Unix time; 0 for a permanent reservation or no lease."}),
		leaseHeld: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "lease_held",
			Help: "1 while the node holds a subnet lease that has not expired."}),
		leaseAcquired: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "lease_acquisitions_total",
			Help: "Times the node acquired or re-acquired its subnet lease."}),
		unreachable: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "unreachable_peers",
			Help: "Peers whose PublicIP is not directly reachable, so host-gw cannot route to them."}),
		peers: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "peers",
			Help: "Other nodes holding a subnet lease."}),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "routes_programmed",
			Help: "Routes to peer subnets in place after the last reconcile."}),
		routeChanges: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "route_changes_total",
			Help: "Routes added or replaced (op=upsert) and removed (op=remove)."}, []string{"op"}),
		reconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "reconcile_errors_total",
			Help: "Failed attempts to reconcile, by kind: lease, list, routes, rules, node."}, []string{"kind"}),
		watchRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "watch_restarts_total",
			Help: "Times the lease watch ended and the leases were listed again, by reason."}, []string{"reason"}),
		ruleRepairs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "rule_repairs_total",
			Help: "iptables changes made to repair missing, duplicated or out-of-order rules."}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "ready",
			Help: "1 when the node holds its lease, the subnet file is written and the rules are in place."}),
		fullSync: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "full_sync_duration_seconds",
			Help:    "Time to list every lease and reconcile the routes against them.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
	}
	m.reg.MustRegister(m.unreachable, m.leaseExpiry, m.leaseHeld, m.leaseAcquired, m.peers, m.routes, m.routeChanges,
		m.reconcileErrors, m.watchRestarts, m.ruleRepairs, m.ready, m.fullSync,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, op := range []string{"upsert", "remove"} {
		m.routeChanges.WithLabelValues(op)
	}
	for _, k := range []string{ErrLease, ErrList, ErrRoutes, ErrRules, ErrNode} {
		m.reconcileErrors.WithLabelValues(k)
	}
	for _, r := range []string{WatchCompacted, WatchError, WatchPeriodic} {
		m.watchRestarts.WithLabelValues(r)
	}
	return m
}

// Registry returns the registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// SetLease records the node's lease: held or not, and its expiry (zero for a
// permanent reservation).
func (m *Metrics) SetLease(held bool, expiry time.Time) {
	m.leaseHeld.Set(boolValue(held))
	if expiry.IsZero() {
		m.leaseExpiry.Set(0)
		return
	}
	m.leaseExpiry.Set(float64(expiry.UnixMilli()) / 1000)
}

// LeaseAcquired counts an acquisition of the node's lease.
func (m *Metrics) LeaseAcquired() { m.leaseAcquired.Inc() }

// SetPeers records how many other nodes hold a lease.
func (m *Metrics) SetPeers(n int) { m.peers.Set(float64(n)) }

// SetUnreachablePeers records how many peers host-gw cannot route to.
func (m *Metrics) SetUnreachablePeers(n int) { m.unreachable.Set(float64(n)) }

// SetRoutes records how many peer routes are in place.
func (m *Metrics) SetRoutes(n int) { m.routes.Set(float64(n)) }

// RouteChanges counts routes added or replaced and removed.
func (m *Metrics) RouteChanges(upserted, removed int) {
	m.routeChanges.WithLabelValues("upsert").Add(float64(upserted))
	m.routeChanges.WithLabelValues("remove").Add(float64(removed))
}

// ReconcileError counts a failure of the given kind (ErrLease, ErrList, ...).
func (m *Metrics) ReconcileError(kind string) { m.reconcileErrors.WithLabelValues(kind).Inc() }

// WatchRestart counts a re-list, by reason (WatchCompacted, ...).
func (m *Metrics) WatchRestart(reason string) { m.watchRestarts.WithLabelValues(reason).Inc() }

// RuleRepairs counts iptables changes made by a repair.
func (m *Metrics) RuleRepairs(n int) { m.ruleRepairs.Add(float64(n)) }

// SetReady records readiness.
func (m *Metrics) SetReady(ready bool) { m.ready.Set(boolValue(ready)) }

// FullSync records how long a full sync took.
func (m *Metrics) FullSync(d time.Duration) { m.fullSync.Observe(d.Seconds()) }

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
