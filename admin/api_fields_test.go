package admin_test

import (
	"net/http"
	"testing"
)

// TestFieldsAccepted: the bodies of every admin endpoint that takes one,
// their fields spelled as SPEC §5 and the API's own answers spell them,
// are accepted: exact field names are no stricter than valid bodies.
func TestFieldsAccepted(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *apiEnv) {
		for _, tc := range []struct {
			target, body string
			status       int
		}{
			{"/api/admin/quotas/config", `{"subject":"key:acme-prod",` +
				`"rate":[{"name":"burst","limit":50,"window":"1s","scope":"key","shadow":false}],` +
				`"quota":[{"name":"hourly","limit":5,"period":"hourly","scope":"user","shadow":true,"count":"success"}],` +
				`"expires_at":"2026-04-01T00:00:00Z"}`, http.StatusCreated},
			{"/api/admin/quotas/config", `{"subject":"plan:free","quota":[]}`, http.StatusCreated},
			{"/api/admin/quotas/config", `{"subject":"user:alice","rate":null,"quota":[{"limit":1,"period":"daily","count":"admitted"}],"expires_at":null}`, http.StatusCreated},
			{"/api/admin/quotas/config", `{"subject":"user:bob","rate":[{"limit":2,"window":"1m","scope":"global"}]}`, http.StatusCreated},
			{"/api/admin/quotas/config", " { \"subj\\u0065ct\" : \"user:bob\" ,\n\t\"rate\" : [ ] } ", http.StatusCreated}, // an escaped name is its letters
			{"/api/admin/quotas/reset", `{"subject":"key:acme-prod"}`, http.StatusOK},
			{"/api/admin/quotas/reset", `{"subject":"user:alice"}`, http.StatusOK},
			{"/api/admin/quotas/reset", ` {"subject":"ip:203.0.113.9"} `, http.StatusOK},
		} {
			want(t, e.post(tc.target, tc.body), tc.status)
		}
		if n := len(e.audits()); n != 8 {
			t.Errorf("%d audit entries, want 8", n)
		}
	})
}
