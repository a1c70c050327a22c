package limiter_test

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// period is a Period for policy tests, which only need its name.
type period string

func (p period) Bounds(t time.Time) (start, end time.Time) {
	start = t.UTC().Truncate(24 * time.Hour)
	return start, start.Add(24 * time.Hour)
}

func (p period) String() string { return string(p) }

var (
	daily   = period("daily")
	monthly = period("monthly")
	now     = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
)

func rate(limit int64, window time.Duration) limiter.Spec {
	return limiter.Spec{Limit: limit, Window: window}
}

func quota(limit int64, p limiter.Period) limiter.Spec {
	return limiter.Spec{Limit: limit, Period: p}
}

// config is the example configuration of SPEC §3, and a few more
// callers.
func config() limiter.PolicyConfig {
	return limiter.PolicyConfig{
		DefaultPlan: "free",
		Plans: []limiter.Plan{
			{Name: "anonymous", Limits: limiter.Limits{
				Rate:  []limiter.Spec{rate(5, time.Second)},
				Quota: []limiter.Spec{quota(1000, daily)},
			}},
			{Name: "free", Limits: limiter.Limits{
				Rate:  []limiter.Spec{rate(10, time.Second), rate(300, time.Minute)},
				Quota: []limiter.Spec{quota(10000, daily), quota(200000, monthly)},
			}},
			{Name: "pro", Limits: limiter.Limits{
				Rate:  []limiter.Spec{rate(100, time.Second), rate(5000, time.Minute), rate(100000, time.Hour)},
				Quota: []limiter.Spec{quota(1000000, monthly)},
			}},
			{Name: "team", Limits: limiter.Limits{
				Rate: []limiter.Spec{{Limit: 50, Window: time.Second, Scope: limiter.ScopeUser}},
			}},
		},
		Users: []limiter.User{
			{ID: "alice", Plan: "pro"},
			{ID: "carol", Limits: limiter.Limits{Rate: []limiter.Spec{rate(50, time.Second)}}},
			{ID: "dave", Plan: "team"},
		},
		Keys: []limiter.Key{
			{ID: "acme-prod", Hash: sha256.Sum256([]byte("test")), User: "alice",
				Limits: limiter.Limits{Rate: []limiter.Spec{rate(20, time.Second)}}},
			{ID: "alice-dev", Hash: sha256.Sum256([]byte("alice-dev-secret")), User: "alice"},
			{ID: "ci-bot", Hash: sha256.Sum256([]byte("plain-text-key")), Plan: "free"},
			{ID: "loner", Hash: sha256.Sum256([]byte("loner-secret"))},
			{ID: "dave-1", Hash: sha256.Sum256([]byte("dave-1")), User: "dave"},
			{ID: "dave-2", Hash: sha256.Sum256([]byte("dave-2")), User: "dave"},
		},
		Routes: []limiter.Route{
			{Name: "confirm", Methods: []string{"POST"}, Path: "/api/claude/confirm/request", Cost: 5,
				Limits: limiter.Limits{Rate: []limiter.Spec{rate(2, time.Second)}}},
			{Name: "global-search", Path: "/search/*",
				Limits: limiter.Limits{Rate: []limiter.Spec{{Limit: 1000, Window: time.Second, Scope: limiter.ScopeGlobal}}}},
			{Name: "health", Path: "/health", Exempt: true},
			{Name: "items", Methods: []string{"GET", "HEAD"}, Path: "/v1/*/items"},
			{Name: "api", Path: "/api/*"},
			{Name: "api-shadowed", Path: "/api/claude/*"},
		},
	}
}

func newPolicy(t *testing.T, rules ...limiter.Rule) *limiter.Policy {
	t.Helper()
	cfg := config()
	cfg.Rules = rules
	p, err := limiter.NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func key(t *testing.T, p *limiter.Policy, secret string) limiter.Subject {
	t.Helper()
	s, ok := p.LookupKey(sha256.Sum256([]byte(secret)))
	if !ok {
		t.Fatalf("LookupKey(%q): not found", secret)
	}
	return s
}

// brief writes limits as "name=limit" in order, for compact wants.
func brief(limits []limiter.Limit) string {
	var b []string
	for _, l := range limits {
		b = append(b, fmt.Sprintf("%s=%d", l.Name, l.Limit))
	}
	return strings.Join(b, " ")
}

func TestLimitsPrecedence(t *testing.T) {
	later := now.Add(time.Hour)
	tests := []struct {
		name    string
		rules   []limiter.Rule
		subject func(*limiter.Policy) limiter.Subject
		want    string
	}{
		{
			name:    "key override replaces the plan's rate list; quotas come from the user's plan",
			subject: func(p *limiter.Policy) limiter.Subject { return key(t, p, "test") },
			want:    "acme-prod-1s=20 pro-monthly=1000000",
		},
		{
			name:    "key without override: its user's plan",
			subject: func(p *limiter.Policy) limiter.Subject { return key(t, p, "alice-dev-secret") },
			want:    "pro-1s=100 pro-1m=5000 pro-1h=100000 pro-monthly=1000000",
		},
		{
			name:    "key's own plan",
			subject: func(p *limiter.Policy) limiter.Subject { return key(t, p, "plain-text-key") },
			want:    "free-1s=10 free-1m=300 free-daily=10000 free-monthly=200000",
		},
		{
			name:    "key without plan or user: default plan",
			subject: func(p *limiter.Policy) limiter.Subject { return key(t, p, "loner-secret") },
			want:    "free-1s=10 free-1m=300 free-daily=10000 free-monthly=200000",
		},
		{
			name:    "user's own list beats the plan; quotas inherit",
			subject: func(p *limiter.Policy) limiter.Subject { return p.ForUser("carol") },
			want:    "carol-1s=50 free-daily=10000 free-monthly=200000",
		},
		{
			name:    "unknown user: default plan",
			subject: func(p *limiter.Policy) limiter.Subject { return p.ForUser("zed") },
			want:    "free-1s=10 free-1m=300 free-daily=10000 free-monthly=200000",
		},
		{
			name:    "ip: anonymous plan",
			subject: func(p *limiter.Policy) limiter.Subject { return p.ForIP("192.0.2.1") },
			want:    "anonymous-1s=5 anonymous-daily=1000",
		},
		{
			name:    "rule on the key beats the key's list",
			rules:   []limiter.Rule{{ID: "1", Subject: "key:acme-prod", Limits: limiter.Limits{Rate: []limiter.Spec{rate(3, time.Second)}}}},
			subject: func(p *limiter.Policy) limiter.Subject { return key(t, p, "test") },
			want:    "acme-prod-1s=3 pro-monthly=1000000",
		},
		{
			name:    "key's list beats a rule on the user",
			rules:   []limiter.Rule{{ID: "1", Subject: "user:alice", Limits: limiter.Limits{Rate: []limiter.Spec{rate(4, time.Second)}, Quota: []limiter.Spec{quota(9, daily)}}}},
			subject: func(p *limiter.Policy) limiter.Subject { return key(t, p, "test") },
			want:    "acme-prod-1s=20 alice-daily=9",
		},
		{
			name:    "rule on the user beats the user's plan",
			rules:   []limiter.Rule{{ID: "1", Subject: "user:alice", Limits: limiter.Limits{Rate: []limiter.Spec{rate(4, time.Second)}}}},
			subject: func(p *limiter.Policy) limiter.Subject { return key(t, p, "alice-dev-secret") },
			want:    "alice-1s=4 pro-monthly=1000000",
		},
		{
			name:    "rule on the user beats the user's own list",
			rules:   []limiter.Rule{{ID: "1", Subject: "user:carol", Limits: limiter.Limits{Rate: []limiter.Spec{rate(6, time.Second)}}}},
			subject: func(p *limiter.Policy) limiter.Subject { return p.ForUser("carol") },
			want:    "carol-1s=6 free-daily=10000 free-monthly=200000",
		},
		{
			name:    "user's own list beats a rule on the plan",
			rules:   []limiter.Rule{{ID: "1", Subject: "plan:free", Limits: limiter.Limits{Rate: []limiter.Spec{rate(7, time.Second)}}}},
			subject: func(p *limiter.Policy) limiter.Subject { return p.ForUser("carol") },
			want:    "carol-1s=50 free-daily=10000 free-monthly=200000",
		},
		{
			name:    "rule on the plan beats the plan",
			rules:   []limiter.Rule{{ID: "1", Subject: "plan:free", Limits: limiter.Limits{Rate: []limiter.Spec{rate(7, time.Second)}}}},
			subject: func(p *limiter.Policy) limiter.Subject { return p.ForUser("zed") },
			want:    "free-1s=7 free-daily=10000 free-monthly=200000",
		},
		{
			name:    "expired rule is ignored",
			rules:   []limiter.Rule{{ID: "1", Subject: "key:acme-prod", ExpiresAt: now, Limits: limiter.Limits{Rate: []limiter.Spec{rate(3, time.Second)}}}},
			subject: func(p *limiter.Policy) limiter.Subject { return key(t, p, "test") },
			want:    "acme-prod-1s=20 pro-monthly=1000000",
		},
		{
			name:    "rule not yet expired applies",
			rules:   []limiter.Rule{{ID: "1", Subject: "key:acme-prod", ExpiresAt: later, Limits: limiter.Limits{Rate: []limiter.Spec{rate(3, time.Second)}}}},
			subject: func(p *limiter.Policy) limiter.Subject { return key(t, p, "test") },
			want:    "acme-prod-1s=3 pro-monthly=1000000",
		},
		{
			name:    "an empty list means none",
			rules:   []limiter.Rule{{ID: "1", Subject: "user:alice", Limits: limiter.Limits{Rate: []limiter.Spec{}, Quota: []limiter.Spec{}}}},
			subject: func(p *limiter.Policy) limiter.Subject { return key(t, p, "alice-dev-secret") },
			want:    "",
		},
		{
			name:    "named spec keeps its name",
			rules:   []limiter.Rule{{ID: "1", Subject: "plan:free", Limits: limiter.Limits{Rate: []limiter.Spec{{Name: "burst", Limit: 7, Window: time.Second}}}}},
			subject: func(p *limiter.Policy) limiter.Subject { return p.ForUser("zed") },
			want:    "burst=7 free-daily=10000 free-monthly=200000",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPolicy(t, tc.rules...)
			if got := brief(p.Limits(nil, tc.subject(p), nil, now)); got != tc.want {
				t.Errorf("Limits = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLimitsRoute(t *testing.T) {
	p := newPolicy(t)
	s := key(t, p, "test")
	r := p.Match("POST", "/api/claude/confirm/request")
	if r == nil || r.Name != "confirm" {
		t.Fatalf("Match = %v, want confirm", r)
	}
	dst := make([]limiter.Limit, 0, 8)
	got := p.Limits(dst, s, r, now)
	if want := "acme-prod-1s=20 pro-monthly=1000000 confirm-1s=2"; brief(got) != want {
		t.Errorf("Limits = %q, want %q", brief(got), want)
	}
	if &got[0] != &dst[:1][0] {
		t.Error("Limits did not append to dst")
	}
	if want := "{user:alice}key:acme-prod/route:confirm/r1s"; got[2].Key != want {
		t.Errorf("route limit key = %q, want %q", got[2].Key, want)
	}
	if c := limiter.Cost(r); c != 5 {
		t.Errorf("Cost = %d, want 5", c)
	}
	// The route costs 5 of the caller's own limits; its own limit of 2
	// per second counts requests, or no request could ever pass.
	if got[0].PerRequest || got[1].PerRequest || !got[2].PerRequest {
		t.Errorf("PerRequest = %v %v %v, want false false true", got[0].PerRequest, got[1].PerRequest, got[2].PerRequest)
	}
}

func TestCounterKeys(t *testing.T) {
	p := newPolicy(t)
	keys := func(s limiter.Subject, r *limiter.Route) []string {
		var k []string
		for _, l := range p.Limits(nil, s, r, now) {
			k = append(k, l.Key)
		}
		return k
	}
	acme, dev := key(t, p, "test"), key(t, p, "alice-dev-secret")
	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{"key's limits and its user's quota share the user's tag", keys(acme, nil),
			[]string{"{user:alice}key:acme-prod/r1s", "{user:alice}user:alice/qmonthly"}},
		{"another key of the same user: own windows, same quota", keys(dev, nil),
			[]string{"{user:alice}key:alice-dev/r1s", "{user:alice}key:alice-dev/r1m", "{user:alice}key:alice-dev/r1h", "{user:alice}user:alice/qmonthly"}},
		{"scope user: one counter across the user's keys", keys(key(t, p, "dave-1"), nil),
			[]string{"{user:dave}user:dave/r1s"}},
		{"scope user, second key", keys(key(t, p, "dave-2"), nil),
			[]string{"{user:dave}user:dave/r1s"}},
		{"key without a user counts alone", keys(key(t, p, "plain-text-key"), nil),
			[]string{"{key:ci-bot}key:ci-bot/r1s", "{key:ci-bot}key:ci-bot/r1m", "{key:ci-bot}key:ci-bot/qdaily", "{key:ci-bot}key:ci-bot/qmonthly"}},
		{"user subject", keys(p.ForUser("zed"), nil),
			[]string{"{user:zed}user:zed/r1s", "{user:zed}user:zed/r1m", "{user:zed}user:zed/qdaily", "{user:zed}user:zed/qmonthly"}},
		{"ip subject counts alone, quotas too", keys(p.ForIP("192.0.2.1"), nil),
			[]string{"{ip:192.0.2.1}ip:192.0.2.1/r1s", "{ip:192.0.2.1}ip:192.0.2.1/qdaily"}},
		{"scope global", keys(acme, p.Match("GET", "/search/x"))[2:],
			[]string{"{global}global/route:global-search/r1s"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !slices.Equal(tc.got, tc.want) {
				t.Errorf("keys = %q, want %q", tc.got, tc.want)
			}
		})
	}
	// Two ip subjects never share a counter.
	if a, b := keys(p.ForIP("192.0.2.1"), nil), keys(p.ForIP("192.0.2.2"), nil); a[0] == b[0] || a[1] == b[1] {
		t.Errorf("two ips share counters: %q, %q", a, b)
	}
}

// TestCounterSubject: CounterSubject reads back, from every key the
// Policy makes, whose counter it is: the subject, its user (scope user,
// and quotas by default) or global; with a route or without, for user
// ids holding slashes, "/route:" and "}" too; and not from keys it does
// not make.
func TestCounterSubject(t *testing.T) {
	p := newPolicy(t)
	subjects := []limiter.Subject{key(t, p, "test"), key(t, p, "dave-1"), key(t, p, "plain-text-key"),
		p.ForUser("zed"), p.ForUser("a/b/route:confirm/qx"), p.ForUser("x}user:y}z"), p.ForUser("}key:k"), p.ForUser("v/route:confirm"),
		p.ForIP("192.0.2.1"), p.ForIP("2001:db8::1")}
	routes := []*limiter.Route{nil, p.Match("POST", "/api/claude/confirm/request"), p.Match("GET", "/search/x")}
	for _, s := range subjects {
		for _, r := range routes {
			for _, l := range p.Limits(nil, s, r, now) {
				got, ok := p.CounterSubject(l.Key)
				if !ok || got != s.ID && got != "user:"+s.User && got != "global" {
					t.Errorf("CounterSubject(%q) = %q, want %q, its user's or global", l.Key, got, s.ID)
				}
				if strings.HasPrefix(l.Key, "{global}") != (got == "global") {
					t.Errorf("CounterSubject(%q) = %q", l.Key, got)
				}
				if l.Period != nil && got != "user:"+s.User && s.User != "" {
					t.Errorf("CounterSubject(%q) = %q, want the user's quota counter", l.Key, got)
				}
			}
		}
	}
	for _, k := range []string{"", "plain", "{user:a}", "{user:a}key:b", "{a}b/qdaily"} {
		if got, ok := p.CounterSubject(k); ok {
			t.Errorf("CounterSubject(%q) = %q, true; want false", k, got)
		}
	}
}

func TestMatch(t *testing.T) {
	p := newPolicy(t)
	tests := []matchCase{
		{"POST", "/api/claude/confirm/request", "confirm"},
		{"GET", "/api/claude/confirm/request", "api"}, // method differs: the next match
		{"POST", "/api/claude/confirm/request/x", "api"},
		{"GET", "/api", "api"},
		{"GET", "/api/", "api"},
		{"GET", "/api/claude/x", "api"}, // first match wins over api-shadowed
		{"GET", "/apix", ""},
		{"GET", "/search", "global-search"},
		{"GET", "/search/a/b", "global-search"},
		{"GET", "/health", "health"},
		{"GET", "/health/x", ""},
		{"GET", "/v1/foo/items", "items"},
		{"HEAD", "/v1/foo/items", "items"},
		{"POST", "/v1/foo/items", ""},
		{"GET", "/v1/foo/bar/items", ""},
		{"GET", "/", ""},
	}
	checkMatches(t, p, tests)
	if r := p.Match("GET", "/health"); r == nil || !r.Exempt {
		t.Errorf("health route = %+v, want exempt", r)
	}
}

// TestMatchCleanedPath: no spelling of a path escapes its route, and an
// exempt prefix lends its exemption to nothing outside it.
func TestMatchCleanedPath(t *testing.T) {
	p, err := limiter.NewPolicy(limiter.PolicyConfig{Routes: []limiter.Route{
		{Name: "confirm", Methods: []string{"GET"}, Path: "/api/confirm", Cost: 5},
		{Name: "public", Path: "/public/*", Exempt: true},
		{Name: "docs", Path: "/docs/"},         // a trailing slash in the pattern
		{Name: "items", Path: "/v1/*/items/"},  // also in a glob
		{Name: "uploads", Path: "/uploads/*/"}, // a glob, not a prefix
		{Name: "post", Methods: []string{"POST"}, Path: "/api/post"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []matchCase{
		{"GET", "/api/confirm", "confirm"},
		{"GET", "/api/confirm/", "confirm"},
		{"GET", "//api/confirm", "confirm"},
		{"GET", "/api/./confirm", "confirm"},
		{"GET", "/api//confirm", "confirm"},
		{"GET", "/api/confirm/.", "confirm"},
		{"GET", "/api/x/../confirm", "confirm"},
		{"GET", "/public/../api/confirm", "confirm"},
		{"GET", "/public/../../api/confirm", "confirm"},
		{"GET", "/public/./../api/confirm/", "confirm"},
		{"GET", "api/confirm", "confirm"}, // not rooted
		{"HEAD", "/api/confirm", "confirm"},
		{"HEAD", "/api//confirm/", "confirm"},
		{"POST", "/api/confirm", ""},
		{"HEAD", "/api/post", ""},   // HEAD follows GET only
		{"GET", "/API/confirm", ""}, // case-sensitive
		{"GET", "/public/x", "public"},
		{"GET", "/public//x/./y", "public"},
		{"GET", "/public", "public"},
		{"GET", "/public/..", ""},
		{"GET", "/docs", "docs"},
		{"GET", "/docs/", "docs"},
		{"GET", "/v1/a/items", "items"},
		{"GET", "/v1/a//items/", "items"},
		{"GET", "/uploads/a", "uploads"},
		{"GET", "/", ""},
		{"GET", "", ""},
	}
	checkMatches(t, p, tests)
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"":                       "/",
		"/":                      "/",
		"//":                     "/",
		"/a/":                    "/a",
		"a/b":                    "/a/b",
		"/a/./b//c/":             "/a/b/c",
		"/public/../api/confirm": "/api/confirm",
		"/../../etc/passwd":      "/etc/passwd",
		"/public/%2e%2e/x":       "/public/%2e%2e/x", // decoded before it gets here
	} {
		if got := limiter.CleanPath(in); got != want {
			t.Errorf("CleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLookupKey(t *testing.T) {
	p := newPolicy(t)
	tests := []struct {
		secret string
		want   limiter.Subject
		ok     bool
	}{
		{"test", limiter.Subject{ID: "key:acme-prod", KeyID: "acme-prod", User: "alice", Plan: "pro"}, true},
		{"plain-text-key", limiter.Subject{ID: "key:ci-bot", KeyID: "ci-bot", Plan: "free"}, true},
		{"loner-secret", limiter.Subject{ID: "key:loner", KeyID: "loner", Plan: "free"}, true},
		{"dave-1", limiter.Subject{ID: "key:dave-1", KeyID: "dave-1", User: "dave", Plan: "team"}, true},
		{"nope", limiter.Subject{}, false},
		{"", limiter.Subject{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.secret, func(t *testing.T) {
			s, ok := p.LookupKey(sha256.Sum256([]byte(tc.secret)))
			if ok != tc.ok || s.ID != tc.want.ID || s.KeyID != tc.want.KeyID || s.User != tc.want.User || s.Plan != tc.want.Plan {
				t.Errorf("LookupKey = %+v, %v, want %+v, %v", s, ok, tc.want, tc.ok)
			}
		})
	}
	// The example hash of SPEC §3 is the SHA-256 of "test".
	if got := fmt.Sprintf("%x", sha256.Sum256([]byte("test"))); got != "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" {
		t.Errorf("sha256(test) = %s", got)
	}
}

func TestKeyByID(t *testing.T) {
	p := newPolicy(t)
	for _, secret := range []string{"test", "plain-text-key", "loner-secret", "dave-1"} {
		want := key(t, p, secret)
		got, ok := p.KeyByID(want.KeyID)
		if !ok || got != want {
			t.Errorf("KeyByID(%q) = %+v, %v, want %+v (as LookupKey)", want.KeyID, got, ok, want)
		}
		// The same limits, key-specific ones included.
		if g, w := brief(p.Limits(nil, got, nil, now)), brief(p.Limits(nil, want, nil, now)); g != w {
			t.Errorf("limits of KeyByID(%q) = %s, want %s", want.KeyID, g, w)
		}
	}
	for _, id := range []string{"", "nope", "ACME-PROD", "test"} {
		if s, ok := p.KeyByID(id); ok {
			t.Errorf("KeyByID(%q) = %+v, want not found", id, s)
		}
	}
}

func TestSubjects(t *testing.T) {
	p := newPolicy(t)
	if s := p.ForUser("alice"); s.ID != "user:alice" || s.User != "alice" || s.Plan != "pro" || s.KeyID != "" {
		t.Errorf("ForUser(alice) = %+v", s)
	}
	if s := p.ForIP("2001:db8::1"); s.ID != "ip:2001:db8::1" || s.Plan != "anonymous" || s.User != "" {
		t.Errorf("ForIP = %+v", s)
	}
	cfg := config()
	cfg.AnonymousPlan = "free"
	q, err := limiter.NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s := q.ForIP("192.0.2.1"); s.Plan != "free" {
		t.Errorf("ForIP with AnonymousPlan free: plan %q", s.Plan)
	}
}

// TestUserIDsFold: every spelling of a user id is one subject with one
// set of counters, the same as its keys', and rules on it apply to all.
func TestUserIDsFold(t *testing.T) {
	now := time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)
	p := newPolicy(t, limiter.Rule{ID: "r1", Subject: "user:Carol", Limits: limiter.Limits{Rate: []limiter.Spec{rate(7, time.Second)}}})
	var keyKeys []string
	for _, l := range p.Limits(nil, key(t, p, "alice-dev-secret"), nil, now) {
		keyKeys = append(keyKeys, l.Key)
	}
	keyLimits := strings.Join(keyKeys, " ")
	for _, id := range []string{"alice", "Alice", "ALICE", "aLiCe"} {
		s := p.ForUser(id)
		if s.ID != "user:alice" || s.User != "alice" || s.Plan != "pro" {
			t.Errorf("ForUser(%q) = %+v, want user:alice on pro", id, s)
		}
		var quotas []string
		for _, l := range p.Limits(nil, s, nil, now) {
			if l.Period != nil {
				quotas = append(quotas, l.Key)
			}
		}
		if want := "{user:alice}user:alice/qmonthly"; strings.Join(quotas, ",") != want || !strings.Contains(keyLimits, want) {
			t.Errorf("ForUser(%q) quotas %q, want %q as alice's keys (%s)", id, quotas, want, keyLimits)
		}
	}
	for _, id := range []string{"carol", "CAROL"} {
		if got := brief(p.Limits(nil, p.ForUser(id), nil, now)); !strings.Contains(got, "carol-1s=7") {
			t.Errorf("ForUser(%q) limits %s, want the rule on user:Carol (carol-1s=7)", id, got)
		}
	}
	cfg := config()
	cfg.Keys = append(cfg.Keys, limiter.Key{ID: "mixed", Hash: sha256.Sum256([]byte("mixed")), User: "Alice"})
	q, err := limiter.NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s := key(t, q, "mixed"); s.User != "alice" {
		t.Errorf("key with user Alice: User %q, want alice", s.User)
	}
	if got := limiter.CanonicalSubject("user:Bob"); got != "user:bob" {
		t.Errorf("CanonicalSubject(user:Bob) = %q", got)
	}
	if got := limiter.CanonicalSubject("key:Acme"); got != "key:Acme" {
		t.Errorf("CanonicalSubject(key:Acme) = %q, want it unchanged", got)
	}
}

func TestCost(t *testing.T) {
	tests := []struct {
		r    *limiter.Route
		want int64
	}{
		{nil, 1},
		{&limiter.Route{}, 1},
		{&limiter.Route{Cost: -3}, 1},
		{&limiter.Route{Cost: 5}, 5},
	}
	for _, tc := range tests {
		if got := limiter.Cost(tc.r); got != tc.want {
			t.Errorf("Cost(%+v) = %d, want %d", tc.r, got, tc.want)
		}
	}
}

func TestShadow(t *testing.T) {
	cfg := config()
	cfg.Plans[1].Rate[1].Shadow = true // free-1m
	p, err := limiter.NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	shadows := func(p *limiter.Policy) []bool {
		var b []bool
		for _, l := range p.Limits(nil, p.ForUser("zed"), p.Match("GET", "/search/x"), now) {
			b = append(b, l.Shadow)
		}
		return b
	}
	if got, want := shadows(p), []bool{false, true, false, false, false}; !slices.Equal(got, want) {
		t.Errorf("shadow flags = %v, want %v", got, want)
	}
	cfg.Shadow = true
	if p, err = limiter.NewPolicy(cfg); err != nil {
		t.Fatal(err)
	}
	if got, want := shadows(p), []bool{true, true, true, true, true}; !slices.Equal(got, want) {
		t.Errorf("global shadow: flags = %v, want %v", got, want)
	}
}

func TestRefundable(t *testing.T) {
	cfg := config()
	cfg.Plans[1].Quota[0].Refundable = true
	p, err := limiter.NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range p.Limits(nil, p.ForUser("zed"), nil, now) {
		if want := l.Name == "free-daily"; l.Refundable != want {
			t.Errorf("%s: refundable = %v, want %v", l.Name, l.Refundable, want)
		}
	}
}

func TestNewPolicyErrors(t *testing.T) {
	tests := []struct {
		name   string
		change func(*limiter.PolicyConfig)
		want   string
	}{
		{"default plan", func(c *limiter.PolicyConfig) { c.DefaultPlan = "gold" }, `default plan "gold"`},
		{"user plan", func(c *limiter.PolicyConfig) { c.Users[0].Plan = "gold" }, `user "alice": plan "gold"`},
		{"key plan", func(c *limiter.PolicyConfig) { c.Keys[0].Plan = "gold" }, `key "acme-prod": plan "gold"`},
		{"key id twice", func(c *limiter.PolicyConfig) { c.Keys[1].ID = "acme-prod" }, `key "acme-prod": id used twice`},
		{"same secret", func(c *limiter.PolicyConfig) { c.Keys[1].Hash = c.Keys[0].Hash }, `key "alice-dev": same secret`},
		{"relative path", func(c *limiter.PolicyConfig) { c.Routes[0].Path = "api/x" }, `route "confirm": path "api/x" must start with /`},
		{"bad glob", func(c *limiter.PolicyConfig) { c.Routes[0].Path = "/a/[" }, `route "confirm": path "/a/["`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config()
			tc.change(&cfg)
			_, err := limiter.NewPolicy(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewPolicy error = %v, want one containing %q", err, tc.want)
			}
		})
	}
	// Case does not matter in plan and user names.
	cfg := config()
	cfg.Users[0].Plan = "PRO"
	p, err := limiter.NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s := p.ForUser("Alice"); s.Plan != "PRO" {
		t.Errorf("ForUser(Alice) plan = %q, want PRO", s.Plan)
	}
}

func TestWithRules(t *testing.T) {
	p := newPolicy(t)
	q, err := p.WithRules([]limiter.Rule{{ID: "1", Subject: "user:zed", Limits: limiter.Limits{Rate: []limiter.Spec{rate(1, time.Second)}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := brief(q.Limits(nil, q.ForUser("zed"), nil, now)), "zed-1s=1 free-daily=10000 free-monthly=200000"; got != want {
		t.Errorf("with rule: %q, want %q", got, want)
	}
	if got, want := brief(p.Limits(nil, p.ForUser("zed"), nil, now)), "free-1s=10 free-1m=300 free-daily=10000 free-monthly=200000"; got != want {
		t.Errorf("original policy changed: %q, want %q", got, want)
	}
	if len(q.Config().Rules) != 1 || len(p.Config().Rules) != 0 {
		t.Errorf("rules: %d and %d, want 1 and 0", len(q.Config().Rules), len(p.Config().Rules))
	}
}

func TestForCaches(t *testing.T) {
	later := now.Add(time.Hour)
	p := newPolicy(t, limiter.Rule{ID: "1", Subject: "key:acme-prod", ExpiresAt: later, Limits: limiter.Limits{Rate: []limiter.Spec{rate(3, time.Second)}}})
	s := key(t, p, "test")
	r := p.Match("POST", "/api/claude/confirm/request")
	a, b := p.For(s, nil, now), p.For(s, nil, now)
	if len(a) == 0 || &a[0] != &b[0] {
		t.Fatal("For built the limits twice for the same subject and route")
	}
	if got, want := brief(a), brief(p.Limits(nil, s, nil, now)); got != want {
		t.Errorf("For = %q, Limits = %q", got, want)
	}
	withRoute := p.For(s, r, now)
	if got, want := brief(withRoute), brief(p.Limits(nil, s, r, now)); got != want || &withRoute[0] == &a[0] {
		t.Errorf("For with a route = %q, want %q, in a slice of its own", got, want)
	}
	// Once the rule expires, the cached limits (with the rule) must not
	// be served.
	after := p.For(s, nil, later)
	if got, want := brief(after), brief(p.Limits(nil, s, nil, later)); got != want || got == brief(a) {
		t.Errorf("after the rule expired: For = %q, want %q", got, want)
	}
	// ...and the limits built then are remembered again: an expired
	// rule does not leave the policy building limits per request.
	if again := p.For(s, nil, later.Add(time.Minute)); &again[0] != &after[0] {
		t.Error("after the rule expired, For built the limits again for the same subject")
	}
}

// matchCase is a request and the route it should match ("" for none).
type matchCase struct{ method, path, want string }

// checkMatches checks p.Match against each case.
func checkMatches(t *testing.T, p *limiter.Policy, tests []matchCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			got := ""
			if r := p.Match(tc.method, tc.path); r != nil {
				got = r.Name
			}
			if got != tc.want {
				t.Errorf("Match(%q, %q) = %q, want %q", tc.method, tc.path, got, tc.want)
			}
		})
	}
}
