package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHandlerExposesEveryMetric(t *testing.T) {
	m := New()
	m.SetLease(true, time.Unix(1_800_000_000, 500_000_000))
	m.LeaseAcquired()
	m.SetPeers(2)
	m.SetRoutes(2)
	m.RouteChanges(2, 1)
	m.ReconcileError(ErrRoutes)
	m.WatchRestart(WatchCompacted)
	m.RuleRepairs(3)
	m.SetReady(true)
	m.FullSync(20 * time.Millisecond)

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		"weft_lease_expiry_timestamp_seconds 1.8000000005e+09",
		"weft_lease_held 1",
		"weft_lease_acquisitions_total 1",
		"weft_peers 2",
		"weft_routes_programmed 2",
		`weft_route_changes_total{op="remove"} 1`,
		`weft_reconcile_errors_total{kind="routes"} 1`,
		`weft_reconcile_errors_total{kind="lease"} 0`,
		`weft_watch_restarts_total{reason="compacted"} 1`,
		"weft_rule_repairs_total 3",
		"weft_ready 1",
		"weft_full_sync_duration_seconds_count 1",
		"go_goroutines",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestReservationExpiryIsZero(t *testing.T) {
	m := New()
	m.SetLease(true, time.Time{})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "weft_lease_expiry_timestamp_seconds 0") {
		t.Error("a reservation's expiry is not 0")
	}
}
