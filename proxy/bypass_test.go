package proxy

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/memstore"
)

// limitedProxy serves a Proxy with a real in-process limiter on a
// stopped clock in front of up: user alice on plan pro (3 a day), key k1
// ("secret-1") of alice, route confirm (GET /api/confirm, cost 5, 1 per
// 10s) and an exempt /public/*.
func limitedProxy(t *testing.T, up http.Handler) *httptest.Server {
	t.Helper()
	now := func() time.Time { return time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC) }
	pol, err := limiter.NewPolicy(limiter.PolicyConfig{
		DefaultPlan: "free",
		Plans: []limiter.Plan{
			{Name: "anonymous", Limits: limiter.Limits{Rate: []limiter.Spec{{Limit: 100, Window: time.Second}}}},
			{Name: "free", Limits: limiter.Limits{Rate: []limiter.Spec{{Limit: 100, Window: time.Second}}}},
			{Name: "pro", Limits: limiter.Limits{
				Rate:  []limiter.Spec{{Limit: 100, Window: time.Second}},
				Quota: []limiter.Spec{{Limit: 3, Period: daily{}}},
			}},
		},
		Users: []limiter.User{{ID: "alice", Plan: "pro"}},
		Keys:  []limiter.Key{{ID: "k1", Hash: sha256.Sum256([]byte("secret-1")), User: "alice"}},
		Routes: []limiter.Route{
			{Name: "confirm", Methods: []string{"GET"}, Path: "/api/confirm", Cost: 5,
				Limits: limiter.Limits{Rate: []limiter.Spec{{Limit: 1, Window: 10 * time.Second}}}},
			{Name: "public", Path: "/public/*", Exempt: true},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	upSrv := httptest.NewServer(up)
	t.Cleanup(upSrv.Close)
	u, _ := url.Parse(upSrv.URL)
	d := limiter.New(memstore.New(now), &limiter.Options{Timeout: -1, Now: now})
	srv := httptest.NewServer(New(u, d, &Settings{Policy: pol, Identity: *testIdentity()}, &Options{Now: now, Logf: t.Logf}))
	t.Cleanup(srv.Close)
	return srv
}

// send makes a request with its request-target written exactly as
// given (net/http's client would rewrite "//x" and clean nothing else).
func send(t *testing.T, srv *httptest.Server, method, target string, header map[string]string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, srv.Listener.Addr())
	for k, v := range header {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, srv.URL, nil)
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestRouteSpellings: once a route's limit is spent, no other spelling
// of its path or HEAD gets through, and an exempt prefix followed by
// ".." is not exempt. What was admitted reaches the upstream as sent.
func TestRouteSpellings(t *testing.T) {
	up := &upstreamRecorder{}
	srv := limitedProxy(t, up)
	var key map[string]string // anonymous: by IP, no quota

	if resp := send(t, srv, "GET", "/api/confirm", key); resp.StatusCode != 200 {
		t.Fatalf("first GET /api/confirm: %d, want 200", resp.StatusCode)
	}
	for _, tc := range []struct{ method, target string }{
		{"GET", "/api/confirm"},
		{"GET", "/api/confirm/"},
		{"GET", "//api/confirm"},
		{"GET", "/api/./confirm"},
		{"GET", "/api//confirm"},
		{"GET", "/api/confirm%2f"},
		{"GET", "/api/x/../confirm"},
		{"GET", "/public/../api/confirm"},
		{"GET", "/public/%2e%2e/api/confirm"},
		{"HEAD", "/api/confirm"},
	} {
		resp := send(t, srv, tc.method, tc.target, key)
		if resp.StatusCode != 429 || resp.Header.Get("Ratelimit-Policy") == "" {
			t.Errorf("%s %s: %d (policy %q), want 429 from route confirm", tc.method, tc.target, resp.StatusCode, resp.Header.Get("Ratelimit-Policy"))
		}
	}
	if resp := send(t, srv, "GET", "/public/x", key); resp.StatusCode != 200 || resp.Header.Get("Ratelimit-Policy") != "" {
		t.Errorf("exempt /public/x: %d, policy %q; want 200 with no limits", resp.StatusCode, resp.Header.Get("Ratelimit-Policy"))
	}

	// Another caller's first request on an odd spelling is admitted and
	// forwarded exactly as sent.
	other := map[string]string{"X-User-Id": "bob"}
	if resp := send(t, srv, "GET", "/api//confirm/", other); resp.StatusCode != 200 {
		t.Fatalf("bob's first request: %d, want 200", resp.StatusCode)
	}
	if resp := send(t, srv, "HEAD", "/api/confirm", other); resp.StatusCode != 429 {
		t.Errorf("bob's HEAD after GET: %d, want 429", resp.StatusCode)
	}
	targets, _ := up.seen()
	want := []string{"GET /api/confirm", "GET /public/x", "GET /api//confirm/"}
	if strings.Join(targets, "|") != strings.Join(want, "|") {
		t.Errorf("upstream saw %q, want %q", targets, want)
	}
}

// TestUserIDCaseInsensitive: every spelling of a user id shares its
// counters (and its plan); the upstream is told the canonical id.
func TestUserIDCaseInsensitive(t *testing.T) {
	up := &upstreamRecorder{}
	srv := limitedProxy(t, up)

	if resp := send(t, srv, "GET", "/x", map[string]string{"X-User-Id": "ALICE"}); resp.StatusCode != 200 {
		t.Fatalf("ALICE: %d, want 200", resp.StatusCode)
	}
	_, h := up.seen()
	for k, want := range map[string]string{"X-Gaia-User": "alice", "X-Gaia-Subject": "user:alice", "X-Gaia-Plan": "pro", "X-User-Id": "ALICE"} {
		if got := h.Get(k); got != want {
			t.Errorf("upstream %s = %q, want %q", k, got, want)
		}
	}
	for i := range 2 {
		if resp := send(t, srv, "GET", "/x", map[string]string{"X-Api-Key": "secret-1"}); resp.StatusCode != 200 {
			t.Fatalf("key request %d: %d, want 200", i, resp.StatusCode)
		}
	}
	for _, id := range []string{"alice", "Alice", "ALICE", "aLiCe"} {
		resp := send(t, srv, "GET", "/x", map[string]string{"X-User-Id": id})
		if resp.StatusCode != 429 || resp.Header.Get("X-Quota-Remaining") != "0" {
			t.Errorf("X-User-Id %s after alice's quota was spent: %d, X-Quota-Remaining %q; want 429, 0",
				id, resp.StatusCode, resp.Header.Get("X-Quota-Remaining"))
		}
	}
}

// TestHeaderAliasesDropped: a header that a CGI upstream would read as an
// identity, API key or client-address header does not reach it unless
// it is the real one from a peer allowed to send it.
func TestHeaderAliasesDropped(t *testing.T) {
	sent := map[string]string{
		"X_User_ID":        "admin",
		"X_user_id":        "admin2",
		"X_Gaia_User":      "root",
		"X-Gaia_Subject":   "key:root",
		"X_GAIA_PLAN":      "enterprise",
		"X_Api_Key":        "other-key",
		"X_Forwarded_For":  "203.0.113.9",
		"X_Forwarded_Host": "evil.example",
		"X_Real_IP":        "203.0.113.9",
		"X-Real-Ip":        "203.0.113.9",
		"Client-Ip":        "203.0.113.9",
		"X-Client-Ip":      "203.0.113.9",
		"True-Client-Ip":   "203.0.113.9",
		"X-User-Id":        "carol",
		"X-Custom_Thing":   "kept",
	}
	tests := []struct {
		name    string
		trusted bool
		kept    []string // of sent, by name; the rest must be gone
	}{
		{"untrusted", false, []string{"X-Custom_Thing"}},
		{"trusted", true, []string{"X-Custom_Thing", "X-User-Id", "X-Real-Ip", "Client-Ip", "X-Client-Ip", "True-Client-Ip"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := &upstreamRecorder{}
			srv := newTestProxy(t, up, &fakeDecider{decide: allowAll}, nil)
			p := srv.Config.Handler.(*Proxy)
			s := *p.Settings()
			if !tc.trusted {
				s.Identity.Trusted = nil
			}
			p.SetSettings(&s)
			if resp := send(t, srv, "GET", "/x", sent); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			_, h := up.seen()
			for name := range h {
				if sameHeader(name, "X-Gaia-Subject") || sameHeader(name, "X-Gaia-User") ||
					sameHeader(name, "X-Gaia-Plan") || sameHeader(name, "X-Gaia-Key-Id") {
					continue // ours, checked below
				}
				for k := range sent {
					if strings.EqualFold(name, k) && !containsFold(tc.kept, k) {
						t.Errorf("upstream got %s: %q", name, h[name])
					}
				}
			}
			for _, k := range tc.kept { // as sent, and nothing an alias added
				if got := h.Values(k); len(got) != 1 || got[0] != sent[k] {
					t.Errorf("upstream got %s %q, want [%q]", k, got, sent[k])
				}
			}
			wantSubject := "ip:127.0.0.1"
			if tc.trusted {
				wantSubject = "user:carol"
			}
			if got := h.Values("X-Gaia-Subject"); len(got) != 1 || got[0] != wantSubject {
				t.Errorf("X-Gaia-Subject = %q, want [%s]", got, wantSubject)
			}
			if got := h.Get("X-Forwarded-For"); got != "127.0.0.1" {
				t.Errorf("X-Forwarded-For = %q, want 127.0.0.1", got)
			}
		})
	}
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// TestStripAPIKeyAliases: with strip_api_key the key's header and every
// alias of it stay behind.
func TestStripAPIKeyAliases(t *testing.T) {
	up := &upstreamRecorder{}
	srv := newTestProxy(t, up, &fakeDecider{decide: allowAll}, nil)
	p := srv.Config.Handler.(*Proxy)
	s := *p.Settings()
	s.Identity.StripAPIKey = true
	p.SetSettings(&s)
	if resp := send(t, srv, "GET", "/x", map[string]string{"X-Api-Key": "secret-1", "X_API_KEY": "other", "X-Api_Key": "other"}); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	_, h := up.seen()
	for name := range h {
		if sameHeader(name, "X-Api-Key") {
			t.Errorf("upstream got %s: %q", name, h[name])
		}
	}
	if got := h.Get("X-Gaia-Key-Id"); got != "k1" {
		t.Errorf("X-Gaia-Key-Id = %q, want k1", got)
	}
}

func TestSameHeader(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"X-User-ID", "x-user-id", true},
		{"X_User_ID", "X-User-Id", true},
		{"x_gaia_", "X-Gaia-", true},
		{"X-User-IDs", "X-User-ID", false},
		{"X.User.ID", "X-User-ID", false},
	} {
		if got := sameHeader(tc.a, tc.b); got != tc.want {
			t.Errorf("sameHeader(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
