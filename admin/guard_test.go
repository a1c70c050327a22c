package admin_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestLoopbackHost: without a token, the admin port answers only to a
// loopback Host, so that a page whose name was re-pointed at 127.0.0.1
// (DNS rebinding) cannot read or change anything; /health and /metrics
// stay open to probes that name the machine by its IP.
func TestLoopbackHost(t *testing.T) {
	store := backends[0].open(t)
	open, locked := newAPI(t, store, ""), newAPI(t, store, adminToken)
	guarded := []string{
		"/api/admin/quotas/config",
		"/api/admin/quotas/violations",
		"/api/admin/nope",
		"/api/ws/health",
		"/ws/admin/quotas",
		"/admin/quotas", // the dashboard
		"/",
	}
	for _, host := range []string{
		"127.0.0.1:9090", "127.0.0.1", "127.8.9.10:29090", "localhost:9090", "localhost", "LocalHost:9090",
		"[::1]:9090", "[::1]", "[::ffff:127.0.0.1]:9090",
	} {
		t.Run("accepted/"+host, func(t *testing.T) {
			r := open.do("GET", "/api/admin/quotas/config", nil, "Host: "+host)
			want(t, r, http.StatusOK)
		})
	}
	for _, host := range []string{
		"evil.example:29090", "evil.example", "localhost.evil.example:9090", "127.0.0.1.nip.io:9090",
		"10.0.0.5:9090", "[::ffff:10.0.0.5]:9090", "[fe80::1]:9090", "0.0.0.0:9090", "",
	} {
		t.Run("refused/"+host, func(t *testing.T) {
			for _, target := range guarded {
				r := open.do("GET", target, nil, "Host: "+host)
				wantError(t, r, http.StatusMisdirectedRequest, "misdirected_request", "loopback")
			}
			r := open.do("POST", "/api/admin/quotas/config", strings.NewReader(`{"subject":"plan:anonymous","rate":[]}`),
				"Host: "+host, "Content-Type: application/json")
			wantError(t, r, http.StatusMisdirectedRequest, "misdirected_request", "admin.token")
			if rules := open.config().Rules; len(rules) != 0 {
				t.Errorf("a rule was stored: %+v", rules)
			}
			for _, target := range []string{"/health", "/metrics"} {
				if r := open.do("GET", target, nil, "Host: "+host); r.Code != http.StatusOK {
					t.Errorf("GET %s with Host %q: %d, want 200 (probes name the pod by IP)", target, host, r.Code)
				}
			}
		})
	}
	// A token protects the port whatever its name.
	r := locked.do("GET", "/api/admin/quotas/config", nil, "Host: gaia.internal:9090", "Authorization: Bearer "+adminToken)
	want(t, r, http.StatusOK)
	r = locked.do("GET", "/api/admin/quotas/config", nil, "Host: gaia.internal:9090")
	want(t, r, http.StatusUnauthorized)
}

// TestCrossSiteWrites: a web page cannot change anything through the
// admin API: changes must be JSON (which a page cannot send to another
// site without the browser asking first), and a browser's Origin, when
// sent, must be the admin port itself.
func TestCrossSiteWrites(t *testing.T) {
	const rule = `{"subject":"plan:anonymous","rate":[]}`
	for _, tc := range []struct {
		name    string
		method  string
		target  string
		body    string
		headers []string
		status  int
		code    string
		msg     string
	}{
		{"text/plain", "POST", "/api/admin/quotas/config", rule, []string{"Content-Type: text/plain"},
			http.StatusUnsupportedMediaType, "unsupported_media_type", `Content-Type must be application/json, got "text/plain"`},
		{"form", "POST", "/api/admin/quotas/config", rule, []string{"Content-Type: application/x-www-form-urlencoded"},
			http.StatusUnsupportedMediaType, "unsupported_media_type", `got "application/x-www-form-urlencoded"`},
		{"no Content-Type", "POST", "/api/admin/quotas/config", rule, nil,
			http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json, got none"},
		{"json look-alike", "POST", "/api/admin/quotas/config", rule, []string{"Content-Type: application/jsonp"},
			http.StatusUnsupportedMediaType, "unsupported_media_type", "application/json"},
		{"bad media type", "POST", "/api/admin/quotas/config", rule, []string{"Content-Type: ;;"},
			http.StatusUnsupportedMediaType, "unsupported_media_type", "application/json"},
		{"reset as text", "POST", "/api/admin/quotas/reset", `{"subject":"user:alice"}`, []string{"Content-Type: text/plain"},
			http.StatusUnsupportedMediaType, "unsupported_media_type", "application/json"},
		{"foreign Origin", "POST", "/api/admin/quotas/config", rule,
			[]string{"Content-Type: application/json", "Origin: http://evil.example"},
			http.StatusForbidden, "cross_origin", `Origin "http://evil.example"`},
		{"foreign Origin, simple request", "POST", "/api/admin/quotas/config", rule,
			[]string{"Content-Type: text/plain", "Origin: http://evil.example"},
			http.StatusForbidden, "cross_origin", "another site"},
		{"null Origin", "POST", "/api/admin/quotas/config", rule,
			[]string{"Content-Type: application/json", "Origin: null"},
			http.StatusForbidden, "cross_origin", "another site"},
		{"same host, other port", "POST", "/api/admin/quotas/config", rule,
			[]string{"Content-Type: application/json", "Origin: http://127.0.0.1:8080"},
			http.StatusForbidden, "cross_origin", "another site"},
		{"cross-site fetch, no Origin", "POST", "/api/admin/quotas/config", rule,
			[]string{"Content-Type: application/json", "Sec-Fetch-Site: cross-site"},
			http.StatusForbidden, "cross_origin", "another site"},
		{"foreign Origin, reset", "POST", "/api/admin/quotas/reset", `{"subject":"user:alice"}`,
			[]string{"Content-Type: application/json", "Origin: https://evil.example"},
			http.StatusForbidden, "cross_origin", "another site"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, token := range []string{"", adminToken} {
				e := newAPI(t, backends[0].open(t), token)
				headers := tc.headers
				if token != "" {
					headers = append([]string{"Authorization: Bearer " + token}, headers...)
				}
				r := e.do(tc.method, tc.target, strings.NewReader(tc.body), headers...)
				wantError(t, r, tc.status, tc.code, tc.msg)
				var c configBody
				want(t, e.do("GET", "/api/admin/quotas/config", nil, "Authorization: Bearer "+token), http.StatusOK).decode(t, &c)
				if len(c.Rules) != 0 {
					t.Errorf("token %q: a rule was stored: %+v", token, c.Rules)
				}
			}
		})
	}

	e := newAPI(t, backends[0].open(t), "")
	for _, headers := range [][]string{
		{"Content-Type: application/json"},
		{"Content-Type: application/json; charset=utf-8"},
		{"Content-Type: Application/JSON"},
		{"Content-Type: application/json", "Origin: http://127.0.0.1:9090"},
		{"Content-Type: application/json", "Sec-Fetch-Site: same-origin", "Origin: http://127.0.0.1:9090"},
		{"Content-Type: application/json", "Sec-Fetch-Site: none"},
	} {
		want(t, e.do("POST", "/api/admin/quotas/config", strings.NewReader(rule), headers...), http.StatusCreated)
	}
	id := e.config().Rules[0].ID
	// DELETE has no body to check, but a foreign page may not send it.
	r := e.do("DELETE", "/api/admin/quotas/config/"+id, nil, "Origin: http://evil.example")
	wantError(t, r, http.StatusForbidden, "cross_origin", "another site")
	if len(e.config().Rules) != 1 {
		t.Fatal("a cross-site DELETE removed the rule")
	}
	want(t, e.do("DELETE", "/api/admin/quotas/config/"+id, nil, "Origin: http://127.0.0.1:9090"), http.StatusNoContent)
	// Reads carry no Origin check: the Host check guards them.
	want(t, e.do("GET", "/api/admin/quotas/config", nil, "Origin: http://evil.example"), http.StatusOK)
	// The token is checked first: a stranger learns nothing else.
	locked := newAPI(t, backends[0].open(t), adminToken)
	want(t, locked.do("POST", "/api/admin/quotas/config", strings.NewReader(rule), "Content-Type: text/plain"), http.StatusUnauthorized)
}
