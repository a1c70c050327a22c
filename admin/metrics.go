package admin

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// MetricsOptions are what Metrics reads at scrape time besides what it
// counts itself. Nil funcs leave their metrics out.
type MetricsOptions struct {
	// Limiter returns the hot path's health ((*limiter.Limiter).State):
	// gaia_redis_errors_total, gaia_redis_healthy and
	// gaia_refusals_held_total.
	Limiter func() limiter.State
	// RoundTrips returns how many decisions the Redis store has made and
	// in how many round trips: gaia_redis_decisions_total and
	// gaia_redis_round_trips_total, whose ratio is the batch size.
	RoundTrips func() RoundTrips
	// Usage returns the quota ledger's backlog ((*quota.Recorder).Stats).
	Usage func() quota.Stats
	// Journal returns the violation journal's backlog
	// ((*quota.Journal).Stats).
	Journal func() quota.JournalStats
	// Routes are the config's route names, whose series are built ahead
	// (see SetRoutes).
	Routes []string
}

// RoundTrips are a Redis store's counters of work and of round trips.
type RoundTrips struct {
	Decisions, RoundTrips int64
}

// Metrics counts what the proxy does for Prometheus, and serves
// /metrics from its own registry (no global state). Its labels are
// decisions, route names and status classes: nothing per subject, no
// secrets. Observe and ObserveUpstream are the proxy's hooks
// (proxy.Options.Observe and Upstream): lock-free and allocation-free
// for the routes of the config. One Metrics serves one Server.
type Metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec   // decision, route
	decision  prometheus.Histogram     // seconds
	upstream  *prometheus.HistogramVec // route; seconds
	responses *prometheus.CounterVec   // route, code ("2xx")
	slowBody  *prometheus.CounterVec   // route
	reloads   [2]prometheus.Counter    // ok, refused
	routes    atomic.Pointer[map[string]*routeMetrics]
	handler   http.Handler
}

// routeMetrics are one route's series, looked up once per config.
type routeMetrics struct {
	requests  [6]prometheus.Counter // by quota.Outcome-1
	upstream  prometheus.Observer
	responses [5]prometheus.Counter // 1xx ... 5xx
}

// noRoute labels requests that matched no route.
const noRoute = "none"

// NewMetrics returns a Metrics with Go and process collectors; o may be
// nil.
func NewMetrics(o *MetricsOptions) *Metrics {
	if o == nil {
		o = &MetricsOptions{}
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gaia_requests_total",
			Help: "Requests by decision (allowed, rate_limited, quota_exceeded, limiter_unavailable, unauthorized, exempt) and route (\"none\": no route matched).",
		}, []string{"decision", "route"}),
		decision: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gaia_decision_duration_seconds",
			Help:    "How long the limiter took to decide a request.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gaia_upstream_duration_seconds",
			Help:    "How long the upstream took to answer a forwarded request (to its response headers), by route.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gaia_upstream_responses_total",
			Help: "Answers to forwarded requests by route and status class; 502 and 504 when the upstream failed.",
		}, []string{"route", "code"}),
		slowBody: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gaia_request_body_timeouts_total",
			Help: "Requests answered 408 because their body did not arrive in time (a client that stalled or trickled it), by route.",
		}, []string{"route"}),
	}
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gaia_config_reloads_total",
		Help: "Configuration reloads by result: ok, or refused (the running config kept serving).",
	}, []string{"result"})
	m.reloads = [2]prometheus.Counter{reloads.WithLabelValues("ok"), reloads.WithLabelValues("refused")}
	m.reg.MustRegister(m.requests, m.decision, m.upstream, m.responses, m.slowBody, reloads,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if f := o.Limiter; f != nil {
		m.reg.MustRegister(
			counterFunc("gaia_redis_errors_total", "Failed round trips to the limiter's primary store (Redis).",
				func() float64 { return float64(f().Failures) }),
			gaugeFunc("gaia_redis_healthy", "1 while the primary store (Redis) decides, 0 while the failure mode does.",
				func() float64 { return bool01(f().Healthy) }),
			counterFunc("gaia_refusals_held_total", "Requests refused again by this replica without asking Redis, while the limit that refused them was still full (redis.hold_refusals).",
				func() float64 { return float64(f().HeldRefusals) }))
	}
	if f := o.RoundTrips; f != nil {
		m.reg.MustRegister(
			counterFunc("gaia_redis_decisions_total", "Decisions the Redis store made; divided by gaia_redis_round_trips_total, how many share a round trip.",
				func() float64 { return float64(f().Decisions) }),
			counterFunc("gaia_redis_round_trips_total", "Round trips (pipelines of script calls) the Redis store made.",
				func() float64 { return float64(f().RoundTrips) }))
	}
	type ledger struct {
		name                        string
		lag, queue, dropped, errors func() float64
		healthy                     func() bool
	}
	var ledgers []ledger
	if f := o.Usage; f != nil {
		m.reg.MustRegister(
			counterFunc("gaia_quota_raised_total", "Quota counters raised in Redis to the ledger's usage because Redis was behind it (restored from older data, or charged without usage decided while it was away): each one a sign of usage Redis had lost.",
				func() float64 { return float64(f().Raised) }),
			counterFunc("gaia_quota_raise_errors_total", "Attempts to raise quota counters in Redis to the ledger's usage that failed (retried at the next write that finds them behind).",
				func() float64 { return float64(f().RaiseErrors) }))
		ledgers = append(ledgers, ledger{"usage",
			func() float64 { return f().Lag.Seconds() },
			func() float64 { return float64(f().Pending) },
			func() float64 { return float64(f().Dropped) },
			func() float64 { return float64(f().Errors) },
			func() bool { return f().Healthy }})
	}
	if f := o.Journal; f != nil {
		ledgers = append(ledgers, ledger{"journal",
			func() float64 { return f().Lag.Seconds() },
			func() float64 { s := f(); return float64(s.PendingViolations + s.PendingRollups + s.PendingAudits) },
			func() float64 { s := f(); return float64(s.DroppedViolations + s.DroppedRollups + s.DroppedAudits) },
			func() float64 { return float64(f().Errors) },
			func() bool { return f().Healthy }})
	}
	for _, l := range ledgers {
		labels := prometheus.Labels{"ledger": l.name}
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gaia_ledger_lag_seconds", ConstLabels: labels,
				Help: "Age of the oldest change not yet written to the durable ledger (usage: quota counters; journal: violations, roll-ups and audit entries)."}, l.lag),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gaia_ledger_queue", ConstLabels: labels,
				Help: "Changes waiting to be written to the durable ledger."}, l.queue),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gaia_ledger_dropped_total", ConstLabels: labels,
				Help: "Changes dropped because the ledger's queue was full."}, l.dropped),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gaia_ledger_errors_total", ConstLabels: labels,
				Help: "Failed writes to the durable ledger (database errors); what failed stays queued and is retried."}, l.errors),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gaia_ledger_healthy", ConstLabels: labels,
				Help: "1 when the last write to the database succeeded, 0 while writes fail."}, func() float64 { return bool01(l.healthy()) }))
	}
	m.SetRoutes(o.Routes)
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// SetRoutes builds the series of the config's routes ahead, so that
// Observe finds them without a label lookup; call it after each reload.
// Other names still work, at the cost of a lookup.
func (m *Metrics) SetRoutes(names []string) {
	t := make(map[string]*routeMetrics, len(names)+1)
	for _, name := range append([]string{""}, names...) {
		label := routeLabel(name)
		r := &routeMetrics{upstream: m.upstream.WithLabelValues(label)}
		for i := range r.requests {
			r.requests[i] = m.requests.WithLabelValues(quota.Outcome(i+1).String(), label)
		}
		for i := range r.responses {
			r.responses[i] = m.responses.WithLabelValues(label, statusClass(i+1))
		}
		t[name] = r
	}
	m.routes.Store(&t)
}

func routeLabel(name string) string {
	if name == "" {
		return noRoute
	}
	return name
}

var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// statusClass returns "1xx" ... "5xx" for 1 ... 5.
func statusClass(c int) string { return statusClasses[c-1] }

// Observe counts a decided request; use it as (or in)
// proxy.Options.Observe.
func (m *Metrics) Observe(e quota.Event) {
	if e.Latency > 0 {
		m.decision.Observe(e.Latency.Seconds())
	}
	i := int(e.Outcome) - 1
	if i < 0 || i >= 6 {
		return
	}
	if r, ok := (*m.routes.Load())[e.Route]; ok {
		r.requests[i].Inc()
		return
	}
	m.requests.WithLabelValues(e.Outcome.String(), routeLabel(e.Route)).Inc()
}

// ObserveUpstream counts an upstream answer; use it as (or in)
// proxy.Options.Upstream.
func (m *Metrics) ObserveUpstream(route string, status int, took time.Duration) {
	c := status / 100
	if r, ok := (*m.routes.Load())[route]; ok {
		r.upstream.Observe(took.Seconds())
		if c >= 1 && c <= 5 {
			r.responses[c-1].Inc()
		}
		return
	}
	m.upstream.WithLabelValues(routeLabel(route)).Observe(took.Seconds())
	if c >= 1 && c <= 5 {
		m.responses.WithLabelValues(routeLabel(route), statusClass(c)).Inc()
	}
}

// BodyTimedOut counts a request whose body did not arrive in time; use
// it as proxy.Options.BodyTimedOut. Rare by nature, so not per route
// ahead of time.
func (m *Metrics) BodyTimedOut(route string) {
	m.slowBody.WithLabelValues(routeLabel(route)).Inc()
}

// ConfigReloaded counts a configuration reload: ok when err is nil,
// refused otherwise.
func (m *Metrics) ConfigReloaded(err error) {
	if err != nil {
		m.reloads[1].Inc()
		return
	}
	m.reloads[0].Inc()
}

// ServeHTTP serves the metrics in the Prometheus text format.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.handler.ServeHTTP(w, r)
}

// registerStream adds the live stream's metrics.
func (m *Metrics) registerStream(h *hub) {
	counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return counterFunc(name, help, func() float64 { return float64(v.Load()) })
	}
	m.reg.MustRegister(
		gaugeFunc("gaia_ws_clients", "Live stream clients connected.", func() float64 { return float64(h.nclients.Load()) }),
		counter("gaia_ws_messages_sent_total", "Live stream messages written to clients.", &h.sent),
		counter("gaia_ws_messages_dropped_total", "Live stream messages dropped because a client's queue was full.", &h.dropped),
		counter("gaia_ws_violations_dropped_total", "Violations not sent to a client one by one (past its budget, or queue full), summarised in violations_dropped messages; one per client.", &h.violationsDropped),
		counter("gaia_ws_bus_dropped_total", "Live stream messages for other replicas dropped (queue full, or the bus failed).", &h.busDropped),
	)
}

// counterFunc and gaugeFunc are series read from f at scrape time.
func counterFunc(name, help string, f func() float64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
}

func gaugeFunc(name, help string, f func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
}
