// Package admin serves gaia-proxy's admin port: health, the JSON admin
// API (SPEC §5), and (as they arrive) the live stream, metrics and the
// dashboard.
package admin

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// Health states, from best to worst.
const (
	StatusOK       = "ok"
	StatusDegraded = "degraded"
	StatusDown     = "down"
)

// Check is the state of one dependency in /health.
type Check struct {
	// Status is StatusOK, StatusDegraded or StatusDown. Down means the
	// proxy refuses traffic because of it; degraded means it serves, with
	// less than it should have.
	Status string `json:"status"`
	// Mode says which implementation serves ("redis", "in-process",
	// "postgres", "embedded", ...).
	Mode  string `json:"mode,omitempty"`
	Error string `json:"error,omitempty"`
}

// Checker reports the state of one dependency. It must return quickly.
type Checker func(ctx context.Context) Check

// Options configure a Server. The zero value serves /health with no checks.
type Options struct {
	// Version is reported by /health.
	Version string
	// Checks are the dependencies /health reports, by name.
	Checks map[string]Checker
	// Logf receives operational logs. Nil means log.Printf.
	Logf func(format string, args ...any)
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time

	// Token is admin.token, asked of /api/admin/* as "Authorization:
	// Bearer <token>" (see requireToken). "" means no auth, which
	// CheckListen allows on a loopback listener only.
	Token string
	// Policy returns the policy in force: the proxy's Settings().Policy.
	// Nil disables the quota endpoints (501).
	Policy func() *limiter.Policy
	// Limiter is the hot path the usage and reset endpoints read and
	// change: the proxy's *limiter.Limiter. Nil disables them (501).
	Limiter Limiter
	// Store is the durable side: runtime rules, audit log, usage ledger,
	// violations and roll-ups (quota/pgstore or quota/boltstore). Nil
	// disables the endpoints that need it (501).
	Store Store
	// Auditor records the audit log's entries, queueing those Store
	// cannot take at once (the proxy's *quota.Journal), so that a change
	// made while the database is away is recorded when it returns. Nil
	// means Store.Audit, and an entry it fails to write is logged and
	// lost.
	Auditor Auditor
	// RulesChanged is called after a runtime rule changed through the
	// API, so that this replica applies it at once; other replicas hear
	// of it through the store (WatchRules). Nil means nothing is called.
	RulesChanged func()

	// Stream configures the live stream, WS /ws/admin/quotas (run it
	// with Run, feed it with Publish).
	Stream StreamOptions
	// Metrics is served on /metrics, with the live stream's metrics
	// added. Nil means a Metrics with no sources.
	Metrics *Metrics
}

// Server is the admin port's handler.
type Server struct {
	mux     *http.ServeMux
	version string
	checks  map[string]Checker
	logf    func(format string, args ...any)
	now     func() time.Time
	started time.Time

	token        *[sha256.Size]byte // of Options.Token; nil means open
	policy       func() *limiter.Policy
	lim          Limiter
	store        Store
	auditor      Auditor
	rulesChanged func()
	rankings     usageRankings // of the usage list, behind its cursors

	hub     *hub
	metrics *Metrics
}

// New returns the admin handler.
func New(o *Options) *Server {
	if o == nil {
		o = &Options{}
	}
	s := &Server{
		mux:     http.NewServeMux(),
		version: o.Version,
		checks:  o.Checks,
		logf:    o.Logf,
		now:     o.Now,

		token:        hashToken(o.Token),
		policy:       o.Policy,
		lim:          o.Limiter,
		store:        o.Store,
		auditor:      o.Auditor,
		rulesChanged: o.RulesChanged,
	}
	if s.logf == nil {
		s.logf = log.Printf
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.started = s.now()
	s.hub = newHub(o.Stream, s.checks, s.logf, s.now)
	s.metrics = o.Metrics
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	s.metrics.registerStream(s.hub)
	s.routes()
	return s
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /health", s.handleHealth)
	s.mux.HandleFunc("GET /api/ws/health", s.handleWSHealth)
	s.mux.Handle("GET /metrics", s.metrics)
	s.mux.Handle("GET /ws/admin/quotas", s.requireToken(http.HandlerFunc(s.handleStream), true))

	s.mux.Handle("GET /api/admin/quotas/config", s.api(s.getConfig))
	s.mux.Handle("POST /api/admin/quotas/config", s.api(s.putRule))
	s.mux.Handle("DELETE /api/admin/quotas/config/{id}", s.api(s.deleteRule))
	s.mux.Handle("GET /api/admin/quotas/usage", s.api(s.getUsage))
	s.mux.Handle("POST /api/admin/quotas/reset", s.api(s.resetUsage))
	s.mux.Handle("GET /api/admin/quotas/violations", s.api(s.getViolations))
	s.mux.Handle("GET /api/admin/quotas/analytics", s.api(s.getAnalytics))
	s.mux.Handle(apiFallback, s.api(s.noEndpoint)) // JSON 404 or 405, after auth
}

// apiFallback is the pattern of the admin API's requests that no route
// takes.
const apiFallback = "/api/admin/"

// noEndpoint answers a request that no admin API route took: 405 with
// Allow when the path has routes for other methods, else 404.
func (s *Server) noEndpoint(w http.ResponseWriter, r *http.Request) error {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if _, pattern := s.mux.Handler(&http.Request{Method: m, URL: r.URL, Host: r.Host}); pattern != "" && pattern != apiFallback {
			allow = append(allow, m)
		}
	}
	if len(allow) == 0 {
		return notFoundError("no endpoint %s %s", r.Method, r.URL.Path)
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	return &apiError{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed",
		Message: fmt.Sprintf("%s %s: this endpoint takes %s", r.Method, r.URL.Path, strings.Join(allow, " or "))}
}

// ServeHTTP serves the admin port. Without a token, only to a loopback
// Host (see checkHost).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if e := s.checkHost(r); e != nil {
		writeError(w, e)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// CheckListen refuses an admin listener that is reachable from other
// machines while no token protects it.
func CheckListen(addr, token string) error {
	if token != "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("admin.listen %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("admin.listen %q is not a loopback address: set admin.token (GAIA_ADMIN_TOKEN), the admin port refuses to start without one", addr)
}

// health is the body of GET /health.
type health struct {
	Status  string           `json:"status"`
	Checks  map[string]Check `json:"checks"`
	Version string           `json:"version"`
	Uptime  int64            `json:"uptime_seconds"`
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	h := health{
		Status:  StatusOK,
		Checks:  make(map[string]Check, len(s.checks)),
		Version: s.version,
		Uptime:  int64(s.now().Sub(s.started) / time.Second),
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, check := range s.checks {
		wg.Go(func() {
			c := check(ctx)
			mu.Lock()
			defer mu.Unlock()
			h.Checks[name] = c
		})
	}
	wg.Wait()
	for _, c := range h.Checks {
		h.Status = worse(h.Status, c.Status)
	}
	status := http.StatusOK
	if h.Status == StatusDown {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, h)
}

// worse returns the worse of two health states.
func worse(a, b string) string {
	rank := map[string]int{StatusOK: 0, StatusDegraded: 1, StatusDown: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.Encode(v)
}
