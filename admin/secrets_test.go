package admin_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
)

// TestNoSecretsInResponses calls every endpoint, successes and errors,
// and checks that no answer shows an API key, its hash, anything in the
// "sha256:" form, or the admin token.
func TestNoSecretsInResponses(t *testing.T) {
	var bodies []answer
	answers.Store(&bodies)
	defer answers.Store(nil)
	eachBackend(t, func(t *testing.T, e *apiEnv) {
		e.requests("key:acme-prod", 3)
		e.requests("key:ci-bot", 2)
		e.requests("key:loner", 1)
		e.flush()
		e.writeViolations()
		e.writeRollups()
		e.get("/api/admin/quotas/config")
		r := e.post("/api/admin/quotas/config", `{"subject":"key:ci-bot","rate":[{"limit":3,"window":"1s"}]}`)
		var rule ruleJSON
		want(t, r, http.StatusCreated).decode(t, &rule)
		e.get("/api/admin/quotas/config")
		for _, secret := range []string{acmeSecret, ciSecret, lonerSecret} {
			for _, kind := range []string{"key:", "user:", "plan:", "ip:", ""} {
				if r := e.post("/api/admin/quotas/config", `{"subject":"`+kind+secret+`","rate":[]}`); r.Code != http.StatusBadRequest {
					t.Errorf("a rule for %s<secret>: status %d, want 400", kind, r.Code)
				}
				e.post("/api/admin/quotas/reset", `{"subject":"`+kind+secret+`"}`)
				e.get("/api/admin/quotas/usage?subject=" + kind + secret)
				e.get("/api/admin/quotas/violations?subject=" + kind + secret)
			}
		}
		for _, id := range []string{"key:acme-prod", "key:ci-bot", "key:loner", "user:alice", "ip:203.0.113.9"} {
			e.get("/api/admin/quotas/usage?subject=" + id)
		}
		e.get("/api/admin/quotas/usage")
		e.get("/api/admin/quotas/usage?limit=1")
		e.post("/api/admin/quotas/reset", `{"subject":"key:acme-prod"}`)
		e.get("/api/admin/quotas/violations?limit=5")
		e.get("/api/admin/quotas/analytics?from=2026-03-09T00:00:00Z&to=2026-03-10T12:00:00Z")
		e.get("/api/admin/quotas/analytics?from=2026-03-09T00:00:00Z&to=2026-03-10T12:00:00Z&format=csv&group_by=user")
		e.do("DELETE", "/api/admin/quotas/config/"+rule.ID, nil)
		e.do("DELETE", "/api/admin/quotas/config/"+rule.ID, nil)
		e.get("/api/admin/nope")
		e.post("/api/admin/quotas/config", strings.Repeat("x", 2<<20))
		locked := newAPI(t, e.store, adminToken)
		locked.do("GET", "/api/admin/quotas/config", nil, "Authorization: Bearer "+acmeSecret)
		locked.do("GET", "/api/admin/quotas/config", nil, "Authorization: Bearer "+adminToken)
	})
	if len(bodies) < 60 {
		t.Fatalf("only %d answers recorded", len(bodies))
	}
	forbidden := []string{"sha256:", adminToken}
	for _, s := range []string{acmeSecret, ciSecret, lonerSecret} {
		sum := sha256.Sum256([]byte(s))
		forbidden = append(forbidden, s, hex.EncodeToString(sum[:]), hex.EncodeToString(sum[:])[:16])
	}
	for _, a := range bodies {
		for _, f := range forbidden {
			if strings.Contains(strings.ToLower(a.body), strings.ToLower(f)) {
				t.Errorf("the answer to %.100s shows %q:\n%.300s", a.request, f, a.body)
			}
		}
	}
}
