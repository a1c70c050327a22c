// Package admin serves gaia-proxy's admin port: health, and (as they
// arrive) the admin API, the live stream, metrics and the dashboard.
package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"sync"
	"time"
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
}

// Server is the admin port's handler.
type Server struct {
	mux     *http.ServeMux
	version string
	checks  map[string]Checker
	logf    func(format string, args ...any)
	now     func() time.Time
	started time.Time
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
	}
	if s.logf == nil {
		s.logf = log.Printf
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.started = s.now()
	s.routes()
	return s
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /health", s.handleHealth)
}

// ServeHTTP serves the admin port.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

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
