package admin_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/memstore"
	"github.com/gaia-proxy/gaia-proxy/limiter/redisstore"
	"github.com/gaia-proxy/gaia-proxy/limiter/storetest"
	"github.com/gaia-proxy/gaia-proxy/migrations"
	"github.com/gaia-proxy/gaia-proxy/quota"
	"github.com/gaia-proxy/gaia-proxy/quota/boltstore"
	"github.com/gaia-proxy/gaia-proxy/quota/pgstore"
)

var (
	_ admin.Limiter = (*limiter.Limiter)(nil)
	_ admin.Store   = (*pgstore.Store)(nil)
	_ admin.Store   = (*boltstore.Store)(nil)
)

// backend is what the tests need of a durable store: what the admin API
// reads, and what the proxy writes.
type backend interface {
	admin.Store
	quota.Store
	quota.JournalStore
	AuditLog(ctx context.Context, limit int) ([]quota.AuditEntry, error)
}

// backends are the durable stores every API test runs against: the
// embedded one always, PostgreSQL when GAIA_TEST_DATABASE_URL is set.
var backends = []struct {
	name string
	open func(t testing.TB) backend
}{
	{"bolt", func(t testing.TB) backend {
		s, err := boltstore.Open(filepath.Join(t.TempDir(), "gaia.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}},
	{"postgres", func(t testing.TB) backend {
		pool := testenv.Pool(t)
		if _, err := migrations.Apply(context.Background(), pool); err != nil {
			t.Fatal(err)
		}
		return pgstore.New(pool)
	}},
}

// hotPaths are the limiter stores every API test runs against: the
// in-process one always, Redis when GAIA_TEST_REDIS_URL is set. Each
// call returns a new, empty store (on Redis, under a new key prefix).
var hotPaths = []struct {
	name string
	open func(t testing.TB, clock *storetest.Clock) func() limiter.Store
}{
	{"memstore", func(t testing.TB, clock *storetest.Clock) func() limiter.Store {
		return func() limiter.Store { return memstore.New(clock.Now) }
	}},
	{"redis", func(t testing.TB, clock *storetest.Clock) func() limiter.Store {
		rdb := testenv.Redis(t)
		return func() limiter.Store {
			prefix := testenv.Prefix(t)
			s := redisstore.New(rdb, &redisstore.Options{Prefix: prefix, Now: clock.Now, Logf: t.Logf})
			t.Cleanup(func() {
				s.Close()
				// Quota counters would live until a month after the test
				// clock's period: delete this test's keys, and only them.
				ctx := context.Background()
				match := strings.NewReplacer(`\`, `\\`, "*", `\*`, "?", `\?`, "[", `\[`).Replace(prefix) + "*"
				for it := rdb.Scan(ctx, 0, match, 100).Iterator(); it.Next(ctx); {
					rdb.Del(ctx, it.Val())
				}
			})
			return s
		}
	}},
}

// Secrets of the configured keys, which no response may ever show.
const (
	acmeSecret  = "acme-live-7f3c9a1e5b2d"
	ciSecret    = "ci-bot-plain-text-key-42"
	lonerSecret = "loner-secret-0b5e"
	adminToken  = "admin-token-d41d8cd98f00"
)

// t0 is the tests' clock start: a Tuesday, mid-month, mid-day.
var t0 = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

func daily() quota.Calendar   { return quota.Calendar{Unit: quota.Daily} }
func monthly() quota.Calendar { return quota.Calendar{Unit: quota.Monthly} }

// policyConfig is the configuration of the API tests: SPEC §3's example,
// smaller.
func policyConfig() limiter.PolicyConfig {
	rate := func(n int64, w time.Duration) limiter.Spec { return limiter.Spec{Limit: n, Window: w} }
	q := func(n int64, p limiter.Period) limiter.Spec { return limiter.Spec{Limit: n, Period: p} }
	return limiter.PolicyConfig{
		DefaultPlan: "free",
		Plans: []limiter.Plan{
			{Name: "anonymous", Limits: limiter.Limits{Rate: []limiter.Spec{rate(5, time.Second)}, Quota: []limiter.Spec{q(50, daily())}}},
			{Name: "free", Limits: limiter.Limits{
				Rate:  []limiter.Spec{rate(10, time.Second), rate(300, time.Minute)},
				Quota: []limiter.Spec{q(100, daily()), q(2000, monthly())},
			}},
			{Name: "pro", Limits: limiter.Limits{
				Rate:  []limiter.Spec{rate(100, time.Second)},
				Quota: []limiter.Spec{q(1000, monthly())},
			}},
		},
		Users: []limiter.User{{ID: "alice", Plan: "pro"}, {ID: "bob"}},
		Keys: []limiter.Key{
			{ID: "acme-prod", Hash: sha256.Sum256([]byte(acmeSecret)), User: "alice",
				Limits: limiter.Limits{Rate: []limiter.Spec{rate(20, time.Second)}}},
			{ID: "ci-bot", Hash: sha256.Sum256([]byte(ciSecret)), Plan: "free"},
			{ID: "loner", Hash: sha256.Sum256([]byte(lonerSecret))},
		},
		Routes: []limiter.Route{
			{Name: "confirm", Methods: []string{"POST"}, Path: "/confirm", Cost: 5,
				Limits: limiter.Limits{Rate: []limiter.Spec{rate(2, time.Second)}}},
			{Name: "search", Path: "/search/*",
				Limits: limiter.Limits{Rate: []limiter.Spec{{Limit: 1000, Window: time.Second, Scope: limiter.ScopeGlobal}}}},
			{Name: "health", Path: "/health", Exempt: true},
		},
	}
}

// apiEnv is an admin Server on a real durable store, with an in-process
// hot path whose quota usage goes to that store through a Recorder, as
// gaia-proxy wires them.
type apiEnv struct {
	t        testing.TB
	ctx      context.Context
	clock    *storetest.Clock
	store    backend
	hot      func() limiter.Store // a new, empty hot path
	recorder *quota.Recorder
	journal  *quota.Journal // the Auditor, as in cmd
	lim      *limiter.Limiter
	policy   atomic.Pointer[limiter.Policy]
	changes  atomic.Int64 // RulesChanged calls
	token    string
	srv      *admin.Server
}

// newAPI returns an apiEnv on store with an in-process hot path; token
// "" leaves the API open.
func newAPI(t *testing.T, store backend, token string) *apiEnv {
	t.Helper()
	clock := storetest.NewClock(t0)
	return newAPIOn(t, store, hotPaths[0].open(t, clock), clock, token)
}

// newAPIOn returns an apiEnv on store and a hot path made by hot,
// reading time from clock.
func newAPIOn(t testing.TB, store backend, hot func() limiter.Store, clock *storetest.Clock, token string) *apiEnv {
	t.Helper()
	e := &apiEnv{t: t, ctx: context.Background(), clock: clock, store: store, hot: hot}
	e.recorder = quota.NewRecorder(store, &quota.RecorderOptions{Now: e.clock.Now, Logf: t.Logf})
	e.journal = quota.NewJournal(store, &quota.JournalOptions{Replica: "test", Now: e.clock.Now, Logf: t.Logf})
	e.lim = limiter.New(hot(), &limiter.Options{Ledger: e.recorder, Logf: t.Logf, Timeout: -1})
	pol, err := limiter.NewPolicy(policyConfig())
	if err != nil {
		t.Fatal(err)
	}
	e.policy.Store(pol)
	e.token = token
	e.srv = newServer(e)
	return e
}

// newServer returns the admin Server of e's parts, as cmd wires them.
func newServer(e *apiEnv) *admin.Server {
	return admin.New(&admin.Options{
		Logf: e.t.Logf, Now: e.clock.Now, Token: e.token,
		Policy: e.policy.Load, Limiter: e.lim, Store: e.store, Auditor: e.journal,
		RulesChanged: func() { e.changes.Add(1) },
	})
}

// eachBackend runs f as a subtest per durable store and hot path.
func eachBackend(t *testing.T, f func(t *testing.T, e *apiEnv)) {
	for _, b := range backends {
		for _, h := range hotPaths {
			t.Run(b.name+"/"+h.name, func(t *testing.T) {
				clock := storetest.NewClock(t0)
				f(t, newAPIOn(t, b.open(t), h.open(t, clock), clock, ""))
			})
		}
	}
}

// response is an answer of the admin Server.
type response struct {
	Code   int
	Header http.Header
	Body   []byte
}

// decode decodes the body into v, failing the test if it is not JSON.
func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("body is not JSON (%v): %s", err, r.Body)
	}
}

// apiErr is an error body.
type apiErr struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// do sends a request with the given headers ("Name: value") and returns
// the answer. Every answer is recorded for TestNoSecretsInResponses. The
// request goes to Host 127.0.0.1:9090, as on a loopback admin port,
// unless a "Host: ..." header says otherwise.
func (e *apiEnv) do(method, target string, body io.Reader, headers ...string) response {
	e.t.Helper()
	req := httptest.NewRequest(method, target, body)
	req.Host = "127.0.0.1:9090"
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.srv.ServeHTTP(rec, req)
	r := response{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
	if seen := answers.Load(); seen != nil {
		*seen = append(*seen, answer{method + " " + target, string(r.Body)})
	}
	return r
}

// answers collects every answer while TestNoSecretsInResponses runs.
var answers atomic.Pointer[[]answer]

// answer is a request and the body of its answer.
type answer struct{ request, body string }

func (e *apiEnv) get(target string) response { e.t.Helper(); return e.do("GET", target, nil) }

// post sends body, a string or a value to encode as JSON.
func (e *apiEnv) post(target string, body any) response {
	e.t.Helper()
	s, ok := body.(string)
	if !ok {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		s = string(b)
	}
	return e.do("POST", target, strings.NewReader(s), "Content-Type: application/json")
}

// want checks the status of r, and returns r.
func want(t testing.TB, r response, code int) response {
	t.Helper()
	if r.Code != code {
		t.Fatalf("status %d, want %d; body %s", r.Code, code, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); r.Code != http.StatusNoContent && !strings.HasPrefix(ct, "application/json") && !strings.HasPrefix(ct, "text/csv") {
		t.Errorf("Content-Type %q, want JSON", ct)
	}
	return r
}

// wantError checks that r is the JSON error code with a message
// containing msg.
func wantError(t testing.TB, r response, status int, code, msg string) {
	t.Helper()
	want(t, r, status)
	var e apiErr
	r.decode(t, &e)
	if e.Error != code || !strings.Contains(e.Message, msg) {
		t.Errorf("error %q %q, want %q with %q", e.Error, e.Message, code, msg)
	}
}

// subject returns the Subject of a key, user or IP, as the proxy
// identifies it.
func (e *apiEnv) subject(id string) limiter.Subject {
	e.t.Helper()
	pol := e.policy.Load()
	kind, rest, _ := strings.Cut(id, ":")
	switch kind {
	case "key":
		s, ok := pol.KeyByID(rest)
		if !ok {
			e.t.Fatalf("no key %q", rest)
		}
		return s
	case "user":
		return pol.ForUser(rest)
	}
	return pol.ForIP(rest)
}

// request decides one request of subject on route (nil: none), as the
// proxy does, and reports whether it was allowed.
func (e *apiEnv) request(id string, route *limiter.Route) bool {
	e.t.Helper()
	pol := e.policy.Load()
	d, err := e.lim.Decide(e.ctx, pol.Limits(nil, e.subject(id), route, e.clock.Now()), limiter.Cost(route))
	if err != nil {
		e.t.Fatal(err)
	}
	return d.Allowed
}

// requests decides n requests of subject on no route.
func (e *apiEnv) requests(id string, n int) {
	e.t.Helper()
	for range n {
		if !e.request(id, nil) {
			e.t.Fatalf("request of %s refused", id)
		}
	}
}

// flush writes the hot path's quota usage to the store.
func (e *apiEnv) flush() {
	e.t.Helper()
	if err := e.recorder.Flush(e.ctx); err != nil {
		e.t.Fatal(err)
	}
}

// audits returns the audit log, newest first.
func (e *apiEnv) audits() []quota.AuditEntry {
	e.t.Helper()
	log, err := e.store.AuditLog(e.ctx, 100)
	if err != nil {
		e.t.Fatal(err)
	}
	return log
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}
