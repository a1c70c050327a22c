package admin_test

import (
	"net/http"
	"strings"
	"testing"
)

func TestAuth(t *testing.T) {
	store := backends[0].open(t)
	locked, open := newAPI(t, store, adminToken), newAPI(t, store, "")
	for _, tc := range []struct {
		name   string
		env    *apiEnv
		target string
		header string
		want   int
	}{
		{"token set, no header", locked, "/api/admin/quotas/config", "", http.StatusUnauthorized},
		{"token set, wrong token", locked, "/api/admin/quotas/config", "Authorization: Bearer not-the-token", http.StatusUnauthorized},
		{"token set, token as a prefix", locked, "/api/admin/quotas/config", "Authorization: Bearer " + adminToken[:10], http.StatusUnauthorized},
		{"token set, token with more", locked, "/api/admin/quotas/config", "Authorization: Bearer " + adminToken + "x", http.StatusUnauthorized},
		{"token set, empty bearer", locked, "/api/admin/quotas/config", "Authorization: Bearer ", http.StatusUnauthorized},
		{"token set, not bearer", locked, "/api/admin/quotas/config", "Authorization: Basic " + adminToken, http.StatusUnauthorized},
		{"token set, right token", locked, "/api/admin/quotas/config", "Authorization: Bearer " + adminToken, http.StatusOK},
		// RFC 9110 §11.1: the scheme is case-insensitive, 1*SP follows it.
		{"token set, lower-case scheme", locked, "/api/admin/quotas/config", "Authorization: bearer " + adminToken, http.StatusOK},
		{"token set, upper-case scheme", locked, "/api/admin/quotas/config", "Authorization: BEARER " + adminToken, http.StatusOK},
		{"token set, two spaces", locked, "/api/admin/quotas/config", "Authorization: Bearer  " + adminToken, http.StatusOK},
		{"token set, no space", locked, "/api/admin/quotas/config", "Authorization: Bearer" + adminToken, http.StatusUnauthorized},
		{"token set, lower-case scheme, wrong token", locked, "/api/admin/quotas/config", "Authorization: bearer not-the-token", http.StatusUnauthorized},
		{"token set, lower-case empty bearer", locked, "/api/admin/quotas/config", "Authorization: bearer ", http.StatusUnauthorized},
		{"token set, other scheme ending in bearer", locked, "/api/admin/quotas/config", "Authorization: XBearer " + adminToken, http.StatusUnauthorized},
		{"token set, token in the query", locked, "/api/admin/quotas/config?token=" + adminToken, "", http.StatusUnauthorized},
		{"token set, unknown path", locked, "/api/admin/nope", "", http.StatusUnauthorized},
		{"token set, unknown path, right token", locked, "/api/admin/nope", "Authorization: Bearer " + adminToken, http.StatusNotFound},
		{"token set, health", locked, "/health", "", http.StatusOK},
		{"open, no header", open, "/api/admin/quotas/config", "", http.StatusOK},
		{"open, any header", open, "/api/admin/quotas/config", "Authorization: Bearer whatever", http.StatusOK},
		{"open, every endpoint", open, "/api/admin/quotas/violations", "", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var headers []string
			if tc.header != "" {
				headers = append(headers, tc.header)
			}
			r := want(t, tc.env.do("GET", tc.target, nil, headers...), tc.want)
			if r.Code == http.StatusUnauthorized {
				wantError(t, r, http.StatusUnauthorized, "unauthorized", "admin token")
				if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate %q, want Bearer", r.Header.Get("WWW-Authenticate"))
				}
			}
			if strings.Contains(string(r.Body), adminToken[:10]) {
				t.Errorf("the answer shows the token: %s", r.Body)
			}
		})
	}
	// Every endpoint and method is behind the token, even before its
	// body is read.
	for _, m := range []struct{ method, target string }{
		{"POST", "/api/admin/quotas/config"}, {"DELETE", "/api/admin/quotas/config/rule_1"},
		{"GET", "/api/admin/quotas/usage"}, {"POST", "/api/admin/quotas/reset"},
		{"GET", "/api/admin/quotas/violations"}, {"GET", "/api/admin/quotas/analytics"},
	} {
		if r := locked.do(m.method, m.target, strings.NewReader("{")); r.Code != http.StatusUnauthorized {
			t.Errorf("%s %s without token: status %d, want 401", m.method, m.target, r.Code)
		}
	}
}
