package admin

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestRequireTokenFromQuery: the helper the stream and dashboard use
// also takes ?token=, the header still wins.
func TestRequireTokenFromQuery(t *testing.T) {
	const token = "query-token-5e1f"
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	for _, tc := range []struct {
		name, token, target, header string
		fromQuery                   bool
		want                        int
	}{
		{"query accepted", token, "/ws?token=" + token, "", true, http.StatusTeapot},
		{"query wrong", token, "/ws?token=nope", "", true, http.StatusUnauthorized},
		{"query empty", token, "/ws?token=", "", true, http.StatusUnauthorized},
		{"query not allowed", token, "/ws?token=" + token, "", false, http.StatusUnauthorized},
		{"header wins over query", token, "/ws?token=" + token, "Bearer nope", true, http.StatusUnauthorized},
		{"header", token, "/ws", "Bearer " + token, true, http.StatusTeapot},
		{"header, lower-case scheme", token, "/ws", "bearer " + token, false, http.StatusTeapot},
		{"lower-case header wins over query", token, "/ws?token=" + token, "bearer nope", true, http.StatusUnauthorized},
		{"open", "", "/ws", "", true, http.StatusTeapot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(&Options{Token: tc.token})
			req := httptest.NewRequest("GET", tc.target, nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			s.requireToken(ok, tc.fromQuery).ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Errorf("status %d, want %d", rec.Code, tc.want)
			}
		})
	}
}
