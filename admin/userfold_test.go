package admin_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
)

// TestUserIDsFold: the admin API names a user in any case and means the
// one the proxy counts, whose id is lower case: runtime rules, usage and
// the violations filter.
func TestUserIDsFold(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *apiEnv) {
		want(t, e.post("/api/admin/quotas/config", `{"subject":"user:Alice","rate":[{"limit":2,"window":"1m"}]}`), http.StatusCreated)
		rules, err := e.store.Rules(e.ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(rules) != 1 || rules[0].Subject != "user:alice" {
			t.Fatalf("stored rules %+v, want one on user:alice", rules)
		}
		pol, err := e.policy.Load().WithRules(rules)
		if err != nil {
			t.Fatal(err)
		}
		e.policy.Store(pol)
		for _, id := range []string{"alice", "ALICE", "aLiCe"} {
			var u usageBody
			want(t, e.get("/api/admin/quotas/usage?subject=user:"+id), http.StatusOK).decode(t, &u)
			if u.Subject != "user:alice" || u.User != "alice" || len(u.Rate) != 1 || u.Rate[0].Limit != 2 {
				t.Errorf("usage of user:%s: %s %s %+v, want user:alice under the rule (2 per 1m)", id, u.Subject, u.User, u.Rate)
			}
		}

		e.writeViolations()
		lower, _ := e.violationPages(url.Values{"subject": {"user:bob"}})
		upper, _ := e.violationPages(url.Values{"subject": {"user:BOB"}})
		if len(lower) == 0 || fmt.Sprint(upper) != fmt.Sprint(lower) {
			t.Errorf("violations of user:BOB %v, want those of user:bob %v", upper, lower)
		}
	})
}
