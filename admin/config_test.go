package admin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/storetest"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// configBody is the shape of GET /api/admin/quotas/config.
type configBody struct {
	DefaultPlan   string `json:"default_plan"`
	AnonymousPlan string `json:"anonymous_plan"`
	Shadow        bool   `json:"shadow"`
	Plans         []struct {
		Name  string           `json:"name"`
		Rate  []quota.SpecJSON `json:"rate"`
		Quota []quota.SpecJSON `json:"quota"`
		Rule  string           `json:"rule"`
	} `json:"plans"`
	Users []struct {
		ID   string `json:"id"`
		Plan string `json:"plan"`
		Rule string `json:"rule"`
	} `json:"users"`
	Keys   []map[string]any `json:"keys"`
	Routes []struct {
		Name    string           `json:"name"`
		Methods []string         `json:"methods"`
		Path    string           `json:"path"`
		Cost    int64            `json:"cost"`
		Exempt  bool             `json:"exempt"`
		Rate    []quota.SpecJSON `json:"rate"`
	} `json:"routes"`
	Rules []ruleJSON `json:"rules"`
}

type ruleJSON struct {
	ID        string           `json:"id"`
	Subject   string           `json:"subject"`
	Rate      []quota.SpecJSON `json:"rate"`
	Quota     []quota.SpecJSON `json:"quota"`
	ExpiresAt *time.Time       `json:"expires_at"`
	Expired   bool             `json:"expired"`
}

func (e *apiEnv) config() configBody {
	e.t.Helper()
	var c configBody
	want(e.t, e.get("/api/admin/quotas/config"), http.StatusOK).decode(e.t, &c)
	return c
}

func TestConfig(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *apiEnv) {
		c := e.config()
		if c.DefaultPlan != "free" || c.AnonymousPlan != "anonymous" || c.Shadow || len(c.Rules) != 0 {
			t.Errorf("config: %+v", c)
		}
		if len(c.Plans) != 3 || c.Plans[1].Name != "free" || len(c.Plans[1].Rate) != 2 || c.Plans[1].Rate[1] != (quota.SpecJSON{Limit: 300, Window: "1m"}) ||
			c.Plans[1].Quota[0] != (quota.SpecJSON{Limit: 100, Period: "daily"}) {
			t.Errorf("plans: %+v", c.Plans)
		}
		if len(c.Users) != 2 || c.Users[0].ID != "alice" || c.Users[0].Plan != "pro" || c.Users[1].Plan != "free" {
			t.Errorf("users (the plan in force): %+v", c.Users)
		}
		wantKeys := []string{
			`{"id":"acme-prod","plan":"pro","quota":null,"rate":[{"limit":20,"window":"1s"}],"user":"alice"}`,
			`{"id":"ci-bot","plan":"free","quota":null,"rate":null}`,
			`{"id":"loner","plan":"free","quota":null,"rate":null}`,
		}
		if len(c.Keys) != len(wantKeys) {
			t.Errorf("%d keys, want %d", len(c.Keys), len(wantKeys))
		}
		for i, k := range c.Keys {
			if b, _ := json.Marshal(k); i >= len(wantKeys) || string(b) != wantKeys[i] {
				t.Errorf("key %d: %s, want %s (ids, users, plans, own limits; nothing else)", i, b, wantKeys[min(i, len(wantKeys)-1)])
			}
		}
		if r := c.Routes; len(r) != 3 || r[0].Name != "confirm" || r[0].Cost != 5 || r[0].Methods[0] != "POST" || r[0].Rate[0].Window != "1s" ||
			r[1].Rate[0].Scope != "global" || r[1].Cost != 1 || !r[2].Exempt || r[2].Methods == nil {
			t.Errorf("routes: %+v", r)
		}

		// Create.
		idForm := regexp.MustCompile(`^rule_[0-9a-f]{16}$`)
		expires := t0.Add(time.Hour)
		body := map[string]any{"subject": "key:acme-prod", "rate": []any{map[string]any{"limit": 50, "window": "1s", "name": "burst"}},
			"quota": []any{}, "expires_at": expires.Format(time.RFC3339)}
		var created ruleJSON
		want(t, e.post("/api/admin/quotas/config", body), http.StatusCreated).decode(t, &created)
		if !idForm.MatchString(created.ID) || created.Subject != "key:acme-prod" || len(created.Rate) != 1 || created.Rate[0].Name != "burst" ||
			created.Quota == nil || len(created.Quota) != 0 || created.ExpiresAt == nil || !created.ExpiresAt.Equal(expires) || created.Expired {
			t.Errorf("created: %+v", created)
		}
		if n := e.changes.Load(); n != 1 {
			t.Errorf("RulesChanged called %d times, want 1", n)
		}
		// Update by subject: same id.
		var updated ruleJSON
		want(t, e.post("/api/admin/quotas/config", `{"subject":"key:acme-prod","rate":[{"limit":60,"window":"1m"}]}`), http.StatusCreated).decode(t, &updated)
		if updated.ID != created.ID || updated.Rate[0].Limit != 60 || updated.Quota != nil || updated.ExpiresAt != nil {
			t.Errorf("updated: %+v, want id %s, rate 60/1m, quota null (inherit), no expiry", updated, created.ID)
		}
		var planRule ruleJSON
		want(t, e.post("/api/admin/quotas/config", `{"subject":"plan:FREE","quota":[{"limit":5,"period":"hourly","count":"success"}],"expires_at":"`+expires.Format(time.RFC3339)+`"}`),
			http.StatusCreated).decode(t, &planRule)
		want(t, e.post("/api/admin/quotas/config", `{"subject":"user:carol","rate":[]}`), http.StatusCreated)

		c = e.config()
		if c.Plans[1].Rule != planRule.ID || c.Keys[0]["rule"] != created.ID || c.Users[0].Rule != "" {
			t.Errorf("the rules in force on plans, keys, users: %q %q %q", c.Plans[1].Rule, c.Keys[0]["rule"], c.Users[0].Rule)
		}
		if len(c.Rules) != 3 || c.Rules[0].ID != created.ID || c.Rules[1].Subject != "plan:free" || c.Rules[2].Subject != "user:carol" ||
			c.Rules[1].Quota[0].Count != "success" || c.Rules[1].Expired {
			t.Errorf("rules: %+v", c.Rules)
		}
		e.clock.Advance(2 * time.Hour)
		if c = e.config(); !c.Rules[1].Expired || c.Rules[0].Expired || c.Plans[1].Rule != "" {
			t.Errorf("after the expiry: expired %v %v, want false true, and no rule in force on the plan", c.Rules[0].Expired, c.Rules[1].Expired)
		}

		// Delete.
		if r := e.do("DELETE", "/api/admin/quotas/config/"+created.ID, nil); r.Code != http.StatusNoContent || len(r.Body) != 0 {
			t.Errorf("DELETE: %d %s, want 204", r.Code, r.Body)
		}
		wantError(t, e.do("DELETE", "/api/admin/quotas/config/"+created.ID, nil), http.StatusNotFound, "not_found", created.ID)
		if c = e.config(); len(c.Rules) != 2 {
			t.Errorf("after DELETE: %d rules, want 2", len(c.Rules))
		}
		if n := e.changes.Load(); n != 5 {
			t.Errorf("RulesChanged called %d times, want 5 (4 puts, 1 delete)", n)
		}

		// Audited, newest first, by the admin at its address.
		log := e.audits()
		actions := []string{}
		for _, a := range log {
			actions = append(actions, a.Action+" "+a.Subject)
			if a.Actor != "admin@192.0.2.1" {
				t.Errorf("actor %q, want admin@192.0.2.1", a.Actor)
			}
		}
		if got := strings.Join(actions, ", "); got != "rule.delete key:acme-prod, rule.put user:carol, rule.put plan:free, rule.put key:acme-prod, rule.put key:acme-prod" {
			t.Errorf("audit log: %s", got)
		}
		var detail ruleJSON
		if err := json.Unmarshal(log[0].Detail, &detail); err != nil || detail.ID != created.ID || detail.Rate[0].Limit != 60 {
			t.Errorf("audit detail of the delete: %s (%v), want the deleted rule", log[0].Detail, err)
		}
	})
}

// TestRuleApplies: a rule posted is what the policy in force applies
// once the caller reloads (RulesChanged), read back from the store.
func TestRuleApplies(t *testing.T) {
	e := newAPI(t, backends[0].open(t), "")
	want(t, e.post("/api/admin/quotas/config", `{"subject":"user:alice","rate":[{"limit":2,"window":"1m"}]}`), http.StatusCreated)
	rules, err := e.store.Rules(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := e.policy.Load().WithRules(rules)
	if err != nil {
		t.Fatal(err)
	}
	e.policy.Store(pol)
	var u usageBody
	want(t, e.get("/api/admin/quotas/usage?subject=user:alice"), http.StatusOK).decode(t, &u)
	if len(u.Rate) != 1 || u.Rate[0].Limit != 2 || u.Rate[0].Window != "1m" {
		t.Errorf("usage after the rule: %+v", u.Rate)
	}
}

func TestRuleInvalid(t *testing.T) {
	e := newAPI(t, backends[0].open(t), "")
	for _, tc := range []struct {
		name, body, want string
	}{
		{"unknown field", `{"subject":"user:a","quotas":[]}`, `unknown field "quotas"`},
		{"unknown field in a limit", `{"subject":"user:a","rate":[{"limit":1,"window":"1s","windows":"2s"}]}`, `rate[0]: unknown field "windows"`},
		// Names are matched exactly, not as encoding/json matches them
		// (case-insensitively), and given once.
		{"upper-case fields", `{"SUBJECT":"user:alice","RATE":[{"LIMIT":5,"WINDOW":"1s"}]}`, `unknown field "SUBJECT"`},
		{"capitalized field", `{"subject":"user:alice","Rate":[{"limit":5,"window":"1s"}]}`, `unknown field "Rate"`},
		{"upper-case field in a limit", `{"subject":"user:alice","rate":[{"LIMIT":5,"window":"1s"}]}`, `rate[0]: unknown field "LIMIT"`},
		{"case-variant duplicate", `{"subject":"user:bob","rate":[{"limit":5,"window":"1s"}],"Rate":[]}`, `unknown field "Rate"`},
		{"duplicate field", `{"subject":"user:bob","rate":[{"limit":5,"window":"1s"}],"rate":[]}`, `duplicate field "rate"`},
		{"duplicate subject", `{"subject":"user:bob","rate":[],"subject":"plan:free"}`, `duplicate field "subject"`},
		{"duplicate field in a limit", `{"subject":"user:bob","quota":[{"limit":5,"period":"daily","limit":6}]}`, `quota[0]: duplicate field "limit"`},
		{"escaped duplicate", `{"subject":"user:bob","rate":[],"r\u0061te":null}`, `duplicate field "rate"`},
		{"subject type", `{"subject":5,"rate":[]}`, "subject: must be a string, got number"},
		{"list type", `{"subject":"user:a","rate":{"limit":1}}`, "rate: must be a list, got object"},
		{"limit type", `{"subject":"user:a","rate":[{"limit":"10","window":"1s"}]}`, "rate[0].limit: must be an integer, got string"},
		{"limit fraction", `{"subject":"user:a","quota":[{"limit":1.5,"period":"daily"}]}`, "quota[0].limit: must be an integer, got number 1.5"},
		{"limit not an object", `{"subject":"user:a","rate":[7]}`, "rate[0]: must be a JSON object, got a number"},
		{"limit null", `{"subject":"user:a","rate":[null]}`, "rate[0]: must be a JSON object, got null"},
		{"shadow type", `{"subject":"user:a","rate":[{"limit":1,"window":"1s","shadow":"yes"}]}`, "rate[0].shadow: must be true or false, got string"},
		{"trailing garbage", `{"subject":"user:a","rate":[]} x`, "body: unexpected data after the JSON object"},
		{"two objects", `{"subject":"user:a","rate":[]}{}`, "body: unexpected data after the JSON object"},
		{"truncated", `{"subject":"user:a","rate":[`, "body: truncated JSON"},
		{"syntax", `{"subject" "user:a"}`, "body: invalid JSON at byte"},
		{"empty body", ``, "body: must be a JSON object, got nothing"},
		{"blank body", " \n", "body: must be a JSON object, got nothing"},
		{"null body", `null`, "body: must be a JSON object, got null"},
		{"list body", `[]`, "body: must be a JSON object, got a list"},
		{"window too long", `{"subject":"user:a","rate":[{"limit":1,"window":"48h"}]}`, `rate[0].window: must be between 1s and 24h, got "48h"`},
		{"window missing", `{"subject":"user:a","rate":[{"limit":1}]}`, `rate[0].window: must be between 1s and 24h, got ""`},
		{"limit zero", `{"subject":"user:a","rate":[{"window":"1s"}]}`, "rate[0].limit: must be between 1 and 1000000000, got 0"},
		{"period", `{"subject":"user:a","quota":[{"limit":1,"period":"yearly"}]}`, `quota[0].period: must be hourly, daily, weekly or monthly, got "yearly"`},
		{"duplicate", `{"subject":"user:a","quota":[{"limit":1,"period":"daily"},{"limit":2,"period":"daily"}]}`, "quota[1]: duplicates quota[0]"},
		{"scope", `{"subject":"user:a","rate":[{"limit":1,"window":"1s","scope":"team"}]}`, `rate[0].scope: must be key, user or global, got "team"`},
		{"no lists", `{"subject":"user:a"}`, "rate, quota: give at least one list"},
		{"null lists", `{"subject":"user:a","rate":null,"quota":null}`, "rate, quota: give at least one list"},
		{"NUL in the subject", `{"subject":"user:a\u0000b","rate":[]}`, "subject: must be UTF-8 text without control characters"},
		{"bad UTF-8 in the subject", "{\"subject\":\"user:a\xffb\",\"rate\":[]}", "subject: must be UTF-8 text without control characters"},
		{"control in a name", `{"subject":"user:a","rate":[{"name":"a\u0001","limit":1,"window":"1s"}]}`, "rate[0].name: must be UTF-8 text without control characters"},
		{"ip subject", `{"subject":"ip:10.0.0.1","rate":[]}`, `subject: must be key:<id>, user:<id> or plan:<name>, got "ip:10.0.0.1"`},
		{"no subject", `{"rate":[]}`, `subject: must be key:<id>, user:<id> or plan:<name>, got ""`},
		{"unknown key", `{"subject":"key:acme-prd","rate":[]}`, `subject: key "acme-prd" is not configured`},
		{"key secret as id", `{"subject":"key:` + acmeSecret + `","rate":[]}`, "subject: that is an API key's secret, not a key's id"},
		{"unknown plan", `{"subject":"plan:gold","rate":[]}`, `subject: plan "gold" is not configured`},
		{"expiry format", `{"subject":"user:a","rate":[],"expires_at":"tomorrow"}`, `expires_at: must be RFC3339 (2026-03-08T12:00:00Z), got "tomorrow"`},
		{"expiry type", `{"subject":"user:a","rate":[],"expires_at":1700000000}`, "expires_at: must be a string, got number"},
		{"expiry past", `{"subject":"user:a","rate":[],"expires_at":"2026-03-10T11:59:59Z"}`, `expires_at: must be in the future, got "2026-03-10T11:59:59Z"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, e.post("/api/admin/quotas/config", tc.body), http.StatusBadRequest, "invalid_request", tc.want)
		})
	}
	if rules, err := e.store.Rules(e.ctx, nil); err != nil || len(rules) != 0 || e.changes.Load() != 0 {
		t.Errorf("after refused bodies: %d rules stored, %d changes, %v", len(rules), e.changes.Load(), err)
	}
	if log := e.audits(); len(log) != 0 {
		t.Errorf("refused bodies were audited: %+v", log)
	}
	// 2 MiB: too large, whatever it holds.
	big := `{"subject":"user:a","rate":[],"pad":"` + strings.Repeat("x", 2<<20) + `"}`
	wantError(t, e.post("/api/admin/quotas/config", big), http.StatusRequestEntityTooLarge, "body_too_large", "over 1048576 bytes")
	wantError(t, e.post("/api/admin/quotas/reset", big), http.StatusRequestEntityTooLarge, "body_too_large", "")
}

// TestRuleCaps: a rule may hold at most 16 limits per list, each named
// in at most 64 bytes (quota.MaxLimits, quota.MaxNameBytes): every
// response to its subject lists them all in RateLimit-Policy, and a
// header of hundreds of KiB is one that clients and front proxies fail
// on. Past the caps, a 400 names the field; at them, the rule is stored.
func TestRuleCaps(t *testing.T) {
	windows := func(n int) []map[string]any {
		list := make([]map[string]any, n)
		for i := range list {
			list[i] = map[string]any{"limit": 10, "window": fmt.Sprintf("%ds", i+1)}
		}
		return list
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := newAPI(t, b.open(t), "")
			for _, tc := range []struct {
				name string
				body map[string]any
				want string
			}{
				{"500,000-byte name", map[string]any{"subject": "user:a", "rate": []map[string]any{{"name": strings.Repeat("n", 500000), "limit": 1, "window": "1s"}}},
					"rate[0].name: at most 64 bytes, got 500000"},
				{"65-byte name", map[string]any{"subject": "user:a", "quota": []map[string]any{{"name": strings.Repeat("é", 32) + "n", "limit": 1, "period": "daily"}}},
					"quota[0].name: at most 64 bytes, got 65"},
				{"2000 windows", map[string]any{"subject": "user:a", "rate": windows(2000)}, "rate: at most 16 limits, got 2000"},
				{"17 windows", map[string]any{"subject": "plan:free", "rate": windows(17)}, "rate: at most 16 limits, got 17"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					r := e.post("/api/admin/quotas/config", tc.body)
					if r.Code != http.StatusBadRequest {
						t.Fatalf("status %d, want 400; body %.300s", r.Code, r.Body) // the body repeats the rule
					}
					wantError(t, r, http.StatusBadRequest, "invalid_request", tc.want)
				})
			}
			if rules, err := e.store.Rules(e.ctx, nil); err != nil || len(rules) != 0 || e.changes.Load() != 0 {
				t.Errorf("after refused rules: %d rules stored, %d changes, %v", len(rules), e.changes.Load(), err)
			}
			at := windows(16)
			at[0]["name"] = strings.Repeat("n", 64)
			var v struct {
				Rate []struct {
					Name string `json:"name"`
				} `json:"rate"`
			}
			want(t, e.post("/api/admin/quotas/config", map[string]any{"subject": "user:a", "rate": at}), http.StatusCreated).decode(t, &v)
			if len(v.Rate) != 16 || v.Rate[0].Name != at[0]["name"] {
				t.Errorf("rule at the caps: %d limits, first named %q; want 16, the first named with 64 bytes", len(v.Rate), v.Rate[0].Name)
			}
		})
	}
}

// TestBodyTimeBound: a client that sends an admin request's headers and
// then stalls its body gets a 408 in JSON once the body's time is up,
// rather than holding the connection for as long as it likes.
func TestBodyTimeBound(t *testing.T) {
	defer admin.SetBodyTime(200 * time.Millisecond)()
	clock := storetest.NewClock(t0)
	e := newAPIOn(t, backends[0].open(t), hotPaths[0].open(t, clock), clock, "")
	ts := httptest.NewServer(e.srv)
	defer ts.Close()
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	began := time.Now()
	fmt.Fprintf(conn, "POST /api/admin/quotas/reset HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"subject\":", ts.Listener.Addr())
	conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // the test's own bound
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	took := time.Since(began)
	const want = `{"error":"request_timeout","message":"the request body did not arrive within 200ms"}`
	if resp.StatusCode != http.StatusRequestTimeout || strings.TrimSpace(string(body)) != want {
		t.Errorf("stalled body: %d %s, want 408 %s", resp.StatusCode, body, want)
	}
	if took < 200*time.Millisecond {
		t.Errorf("answered after %v, before the body's time was up", took)
	}
	if n := e.changes.Load(); n != 0 {
		t.Errorf("%d changes made from a body that never arrived", n)
	}
}

// TestNotText: subjects, ids and parameters that no text column could
// hold (NUL, invalid UTF-8) are refused by name on every store, not
// passed on to fail there.
func TestNotText(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *apiEnv) {
		wantError(t, e.do("DELETE", "/api/admin/quotas/config/%ff", nil), http.StatusNotFound, "not_found", "no runtime rule")
		wantError(t, e.do("DELETE", "/api/admin/quotas/config/a%00b", nil), http.StatusNotFound, "not_found", "no runtime rule")
		wantError(t, e.get("/api/admin/quotas/violations?subject=user:a%00b"), http.StatusBadRequest, "invalid_request", "subject: must be UTF-8 text")
		wantError(t, e.get("/api/admin/quotas/usage?subject=user:%ff"), http.StatusBadRequest, "invalid_request", "subject: must be UTF-8 text")
		wantError(t, e.post("/api/admin/quotas/config", `{"subject":"user:a\u0000b","rate":[]}`), http.StatusBadRequest, "invalid_request", "subject: must be UTF-8 text")
	})
}

// rulesDown is a backend whose runtime rules cannot be read.
type rulesDown struct{ backend }

func (rulesDown) Rules(context.Context, *time.Location) ([]limiter.Rule, error) {
	return nil, errors.New("dial tcp 127.0.0.1:5432: connection refused")
}

// TestConfigWhileStoreDown: the configuration page still answers while
// the store cannot be read, with the rules this replica holds and a
// warning saying so.
func TestConfigWhileStoreDown(t *testing.T) {
	e := newAPI(t, rulesDown{backends[0].open(t)}, "")
	pol, err := e.policy.Load().WithRules([]limiter.Rule{{ID: "r1", Subject: "user:held", Limits: limiter.Limits{Rate: []limiter.Spec{{Limit: 1, Window: time.Second}}}}})
	if err != nil {
		t.Fatal(err)
	}
	e.policy.Store(pol)
	var v struct {
		Rules []struct {
			ID      string `json:"id"`
			Subject string `json:"subject"`
		} `json:"rules"`
		Warning string `json:"warning"`
	}
	want(t, e.get("/api/admin/quotas/config"), http.StatusOK).decode(t, &v)
	if len(v.Rules) != 1 || v.Rules[0].ID != "r1" || !strings.Contains(v.Warning, "database did not answer") {
		t.Errorf("config with the store down: rules %+v, warning %q; want the rule held here and a warning", v.Rules, v.Warning)
	}
}
