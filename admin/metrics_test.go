package admin_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// TestMetrics scrapes /metrics after known traffic and parses it.
func TestMetrics(t *testing.T) {
	m := admin.NewMetrics(&admin.MetricsOptions{
		Limiter: func() limiter.State {
			return limiter.State{Healthy: false, Mode: "fallback-local", Failures: 7, HeldRefusals: 11}
		},
		Usage: func() quota.Stats {
			return quota.Stats{Pending: 12, Dropped: 2, Lag: 1500 * time.Millisecond, Healthy: true, Errors: 4, Raised: 5, RaiseErrors: 6}
		},
		Journal: func() quota.JournalStats {
			return quota.JournalStats{PendingViolations: 3, PendingRollups: 4, DroppedViolations: 1, Lag: 3 * time.Second, Healthy: false, Errors: 9}
		},
		RoundTrips: func() admin.RoundTrips { return admin.RoundTrips{Decisions: 90, RoundTrips: 6} },
		Routes:     []string{"confirm", "search"},
	})
	// Events carry who asked; /metrics must not show it.
	who := quota.Event{Subject: "key:secret-subject", KeyID: "secret-subject-key", User: "secret-subject-user"}
	for range 3 {
		e := who
		e.Route, e.Outcome, e.Latency = "confirm", quota.Allowed, time.Millisecond
		m.Observe(e)
	}
	for range 2 {
		e := who
		e.Outcome, e.Latency = quota.RateLimited, 2*time.Millisecond
		m.Observe(e)
	}
	m.Observe(quota.Event{Route: "added-later", Outcome: quota.QuotaExceeded, Latency: time.Millisecond})
	m.Observe(quota.Event{Route: "search", Outcome: quota.Unauthorized}) // the limiter was not asked
	m.ObserveUpstream("confirm", 200, 10*time.Millisecond)
	m.ObserveUpstream("confirm", 201, 20*time.Millisecond)
	m.ObserveUpstream("confirm", 502, time.Second)
	m.ObserveUpstream("added-later", 404, time.Millisecond)
	m.BodyTimedOut("confirm")
	m.BodyTimedOut("")
	m.BodyTimedOut("")
	m.ConfigReloaded(nil)
	m.ConfigReloaded(nil)
	m.ConfigReloaded(errors.New("limits[0].rate: must be > 0"))

	srv, ts := startStream(t, &admin.Options{Metrics: m, Token: "s3cret", Stream: fast()})
	srv.Publish(quota.Event{Subject: "key:secret-subject", Outcome: quota.Allowed})
	families, text := scrape(t, ts)

	if strings.Contains(text, "secret-subject") || strings.Contains(text, "s3cret") {
		t.Error("/metrics shows a subject or the token")
	}
	for _, tc := range []struct {
		name   string
		labels string // "k=v,k=v", sorted
		want   float64
	}{
		{"gaia_requests_total", "decision=allowed,route=confirm", 3},
		{"gaia_requests_total", "decision=rate_limited,route=none", 2},
		{"gaia_requests_total", "decision=quota_exceeded,route=added-later", 1},
		{"gaia_requests_total", "decision=unauthorized,route=search", 1},
		{"gaia_requests_total", "decision=exempt,route=search", 0}, // built ahead
		{"gaia_decision_duration_seconds", "", 6},                  // sample count
		{"gaia_upstream_duration_seconds", "route=confirm", 3},
		{"gaia_upstream_duration_seconds", "route=added-later", 1},
		{"gaia_upstream_responses_total", "code=2xx,route=confirm", 2},
		{"gaia_upstream_responses_total", "code=5xx,route=confirm", 1},
		{"gaia_upstream_responses_total", "code=4xx,route=added-later", 1},
		{"gaia_request_body_timeouts_total", "route=confirm", 1},
		{"gaia_request_body_timeouts_total", "route=none", 2},
		{"gaia_config_reloads_total", "result=ok", 2},
		{"gaia_config_reloads_total", "result=refused", 1},
		{"gaia_redis_errors_total", "", 7},
		{"gaia_redis_healthy", "", 0},
		{"gaia_refusals_held_total", "", 11},
		{"gaia_redis_decisions_total", "", 90},
		{"gaia_redis_round_trips_total", "", 6},
		{"gaia_ledger_lag_seconds", "ledger=usage", 1.5},
		{"gaia_ledger_lag_seconds", "ledger=journal", 3},
		{"gaia_ledger_queue", "ledger=usage", 12},
		{"gaia_ledger_queue", "ledger=journal", 7},
		{"gaia_ledger_dropped_total", "ledger=usage", 2},
		{"gaia_quota_raised_total", "", 5},
		{"gaia_quota_raise_errors_total", "", 6},
		{"gaia_ledger_dropped_total", "ledger=journal", 1},
		{"gaia_ledger_errors_total", "ledger=usage", 4},
		{"gaia_ledger_errors_total", "ledger=journal", 9},
		{"gaia_ledger_healthy", "ledger=usage", 1},
		{"gaia_ledger_healthy", "ledger=journal", 0},
		{"gaia_ws_clients", "", 0},
		{"gaia_ws_messages_dropped_total", "", 0},
		{"gaia_ws_violations_dropped_total", "", 0},
	} {
		got, ok := value(families[tc.name], tc.labels)
		if !ok {
			t.Errorf("%s{%s}: missing", tc.name, tc.labels)
			continue
		}
		if got != tc.want {
			t.Errorf("%s{%s} = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	// The decision histogram's buckets: 3 at 1ms... and all 6 by 2.5ms.
	if h := families["gaia_decision_duration_seconds"].GetMetric()[0].GetHistogram(); h.GetSampleSum() < 0.008 || h.GetSampleSum() > 0.0081 {
		t.Errorf("decision latency sum %v, want 0.008", h.GetSampleSum())
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "gaia_ws_messages_sent_total", "gaia_ws_bus_dropped_total"} {
		if families[name] == nil {
			t.Errorf("%s: missing", name)
		}
	}
}

// TestMetricsDefault: without Options.Metrics, /metrics still serves the
// process and the live stream.
func TestMetricsDefault(t *testing.T) {
	_, ts := startStream(t, &admin.Options{Stream: fast()})
	dial(t, ts, nil)
	families, _ := scrape(t, ts)
	if got, _ := value(families["gaia_ws_clients"], ""); got != 1 {
		t.Errorf("gaia_ws_clients = %v, want 1", got)
	}
	if families["go_goroutines"] == nil || families["gaia_redis_errors_total"] != nil {
		t.Error("want the Go collector, and no Redis metrics without a limiter")
	}
}

func scrape(t *testing.T, ts *httptest.Server) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	var text strings.Builder
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(io.TeeReader(resp.Body, &text))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families, text.String()
}

// value returns the value of the family's metric with exactly labels
// ("k=v,k=v", sorted by name): a counter's or gauge's value, a
// histogram's sample count.
func value(f *dto.MetricFamily, labels string) (float64, bool) {
	for _, m := range f.GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		sort.Strings(ls)
		if strings.Join(ls, ",") != labels {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetricsAllocs: the proxy's hooks do not allocate for the routes of
// the config.
func TestMetricsAllocs(t *testing.T) {
	m := admin.NewMetrics(&admin.MetricsOptions{Routes: []string{"confirm"}})
	for name, f := range map[string]func(){
		"Observe":          func() { m.Observe(quota.Event{Route: "confirm", Outcome: quota.Allowed, Latency: time.Millisecond}) },
		"Observe no route": func() { m.Observe(quota.Event{Outcome: quota.RateLimited, Latency: time.Millisecond}) },
		"ObserveUpstream":  func() { m.ObserveUpstream("confirm", 200, time.Millisecond) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s allocates %v times, want 0", name, n)
		}
	}
}

func BenchmarkObserve(b *testing.B) {
	m := admin.NewMetrics(&admin.MetricsOptions{Routes: []string{"confirm"}})
	e := quota.Event{Route: "confirm", Outcome: quota.Allowed, Latency: time.Millisecond}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Observe(e)
		}
	})
}
