package admin_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gaia-proxy/gaia-proxy/admin"
)

// TestNotConfigured: an admin port built without the policy, the
// limiter or the store answers their endpoints 501, in JSON, and keeps
// serving /health.
func TestNotConfigured(t *testing.T) {
	s := admin.New(nil)
	for _, tc := range []struct{ method, target, body string }{
		{"GET", "/api/admin/quotas/config", ""},
		{"POST", "/api/admin/quotas/config", `{"subject":"user:a","rate":[]}`},
		{"DELETE", "/api/admin/quotas/config/rule_1", ""},
		{"GET", "/api/admin/quotas/usage?subject=user:a", ""},
		{"POST", "/api/admin/quotas/reset", `{"subject":"user:a"}`},
		{"GET", "/api/admin/quotas/violations", ""},
		{"GET", "/api/admin/quotas/analytics", ""},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
		req.Host = "127.0.0.1:9090"
		req.Header.Set("Content-Type", "application/json")
		s.ServeHTTP(rec, req)
		r := response{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
		wantError(t, r, http.StatusNotImplemented, "not_configured", "is not configured")
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("/health: %d", rec.Code)
	}
}

func TestUnknownEndpoint(t *testing.T) {
	e := newAPI(t, backends[0].open(t), "")
	wantError(t, e.get("/api/admin/quotas/nope"), http.StatusNotFound, "not_found", "no endpoint GET /api/admin/quotas/nope")
	r := e.do("PUT", "/api/admin/quotas/config", nil)
	wantError(t, r, http.StatusMethodNotAllowed, "method_not_allowed", "PUT /api/admin/quotas/config: this endpoint takes GET or POST")
	if got := r.Header.Get("Allow"); got != "GET, POST" {
		t.Errorf("Allow %q, want %q", got, "GET, POST")
	}
	r = e.do("GET", "/api/admin/quotas/config/rule-1", nil)
	wantError(t, r, http.StatusMethodNotAllowed, "method_not_allowed", "takes DELETE")
	if got := r.Header.Get("Allow"); got != "DELETE" {
		t.Errorf("Allow %q, want %q", got, "DELETE")
	}
	wantError(t, e.do("DELETE", "/api/admin/quotas/nope/x", nil), http.StatusNotFound, "not_found", "no endpoint DELETE /api/admin/quotas/nope/x")
	wantError(t, e.get("/api/admin/quotas/config?verbose=1"), http.StatusBadRequest, "invalid_request", `unknown parameter "verbose"`)
}
