package admin_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/internal/relay"
	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/migrations"
	"github.com/gaia-proxy/gaia-proxy/quota/pgstore"
)

// pgBehindRelay returns a PostgreSQL store on a fresh, migrated schema,
// reached through a relay that the test may freeze or cut.
func pgBehindRelay(t *testing.T) (backend, *relay.Relay) {
	t.Helper()
	dbURL := testenv.Schema(t)
	addr := strings.SplitN(strings.TrimPrefix(dbURL, "postgres://"), "/", 2)[0]
	if _, host, ok := strings.Cut(addr, "@"); ok {
		addr = host
	}
	rl := relay.New(t, addr)
	pool, err := pgxpool.New(context.Background(), strings.Replace(dbURL, addr, rl.Addr(), 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rl.Cut() // a frozen relay would hold the pool's goodbyes
		pool.Close()
	})
	if _, err := migrations.Apply(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	return pgstore.New(pool), rl
}

// warnedConfig is the part of GET /api/admin/quotas/config that tells
// whether the database was read.
type warnedConfig struct {
	Rules   []ruleJSON `json:"rules"`
	Warning string     `json:"warning"`
}

// TestDatabaseHangs: while PostgreSQL hangs (it takes connections and
// answers nothing), every admin endpoint that calls the store answers
// within the store's time: the config page with the rules in force here
// and a warning, the others a 503 database_unavailable. When the
// database answers again, so does the API.
func TestDatabaseHangs(t *testing.T) {
	const bound = 250 * time.Millisecond
	defer admin.SetStoreTime(bound, 2*bound)()
	store, rl := pgBehindRelay(t)
	e := newAPI(t, store, "")
	pol, err := e.policy.Load().WithRules([]limiter.Rule{{ID: "r1", Subject: "user:held", Limits: limiter.Limits{Rate: []limiter.Spec{{Limit: 1, Window: time.Second}}}}})
	if err != nil {
		t.Fatal(err)
	}
	e.policy.Store(pol)
	want(t, e.get("/api/admin/quotas/config"), http.StatusOK) // connections open, then the database hangs
	rl.Freeze()

	type call struct {
		method, target, body string
		status               int
		msg                  string // in the message, or in the config's warning
	}
	calls := []call{
		{"GET", "/api/admin/quotas/config", "", http.StatusOK, "the database did not answer"},
		{"GET", "/api/admin/quotas/violations", "", http.StatusServiceUnavailable, "reading violations: the database did not answer within 250ms"},
		{"GET", "/api/admin/quotas/analytics", "", http.StatusServiceUnavailable, "reading roll-ups: the database did not answer within 500ms"},
		{"GET", "/api/admin/quotas/usage", "", http.StatusServiceUnavailable, "reading the usage ledger: the database did not answer within 500ms"},
		{"POST", "/api/admin/quotas/config", `{"subject":"user:a","rate":[]}`, http.StatusServiceUnavailable, "storing the rule: the database did not answer"},
		{"DELETE", "/api/admin/quotas/config/rule_0123456789abcdef", "", http.StatusServiceUnavailable, "reading runtime rules: the database did not answer"},
		// The hot path answers, and the audit entry waits in the journal.
		{"POST", "/api/admin/quotas/reset", `{"subject":"user:alice"}`, http.StatusOK, ""},
	}
	type answer struct {
		response
		took time.Duration
	}
	answers := make([]chan answer, len(calls))
	start := time.Now()
	for i, c := range calls {
		answers[i] = make(chan answer, 1)
		go func() {
			r := e.do(c.method, c.target, strings.NewReader(c.body), "Content-Type: application/json")
			answers[i] <- answer{r, time.Since(start)}
		}()
	}
	defer func() {
		// Calls still hung fail once their connections are gone; the
		// test waits for them, since they log through it.
		rl.Cut()
		for _, ch := range answers {
			if ch != nil {
				<-ch
			}
		}
	}()
	// Far past the bounds (a reset waits up to 1 s twice for the ledger,
	// then 2 s for the journal's audit write: 4 s), far short of forever.
	deadline, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, c := range calls {
		var a answer
		select {
		case a = <-answers[i]:
		case <-deadline.Done():
			select {
			case a = <-answers[i]:
			default:
				t.Errorf("%s %s: no answer within 10 s of the database hanging", c.method, c.target)
				continue
			}
		}
		answers[i] = nil
		t.Logf("%s %s: %d after %v", c.method, c.target, a.Code, a.took.Round(time.Millisecond))
		if c.status != http.StatusOK {
			wantError(t, a.response, c.status, "database_unavailable", c.msg)
			continue
		}
		want(t, a.response, c.status)
		if c.msg == "" {
			continue
		}
		var v warnedConfig
		a.decode(t, &v)
		if len(v.Rules) != 1 || v.Rules[0].ID != "r1" || !strings.Contains(v.Warning, c.msg) {
			t.Errorf("config with the database hung: rules %+v, warning %q; want the rule held here and a warning", v.Rules, v.Warning)
		}
	}
	if t.Failed() {
		return
	}
	rl.Restore()
	var v warnedConfig
	want(t, e.get("/api/admin/quotas/config"), http.StatusOK).decode(t, &v)
	if v.Warning != "" {
		t.Errorf("config once the database answers again: warning %q, want none", v.Warning)
	}
	want(t, e.get("/api/admin/quotas/violations"), http.StatusOK)
}
