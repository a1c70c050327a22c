package admin_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

type violationsBody struct {
	Violations []struct {
		ID      string    `json:"id"`
		At      time.Time `json:"at"`
		Subject string    `json:"subject"`
		KeyID   string    `json:"key_id"`
		Route   string    `json:"route"`
		Method  string    `json:"method"`
		Path    string    `json:"path"`
		Limit   struct {
			Name   string `json:"name"`
			Limit  int64  `json:"limit"`
			Window string `json:"window"`
			Period string `json:"period"`
		} `json:"limit"`
		Kind   string `json:"kind"`
		Shadow bool   `json:"shadow"`
	} `json:"violations"`
	NextCursor string `json:"next_cursor"`
}

// violationAt is when test violation i happened: one a minute, the
// last a minute before t0.
func violationAt(i int) time.Time { return t0.Add(time.Duration(i-25) * time.Minute) }

// writeViolations stores 25 violations, of key:acme-prod (even i) and
// user:bob (odd i); every third one a quota's.
func (e *apiEnv) writeViolations() {
	e.t.Helper()
	var vs []quota.Violation
	for i := range 25 {
		v := quota.Violation{ID: fmt.Sprintf("r1-%03d", i), At: violationAt(i), Subject: "key:acme-prod", KeyID: "acme-prod", User: "alice",
			Plan: "pro", Route: "confirm", Method: "POST", Path: "/confirm", LimitName: "confirm-1s", Limit: 2, Window: time.Second, Kind: quota.RateLimited}
		if i%2 == 1 {
			v.Subject, v.KeyID, v.User, v.Plan, v.Route, v.Method, v.Path = "user:bob", "", "bob", "free", "", "GET", "/items"
		}
		if i%3 == 2 {
			v.LimitName, v.Limit, v.Window, v.Period, v.Kind, v.Shadow = "free-daily", 100, 0, "daily", quota.QuotaExceeded, true
		}
		vs = append(vs, v)
	}
	if err := e.store.WriteViolations(e.ctx, vs); err != nil {
		e.t.Fatal(err)
	}
}

// pages reads every page of the violations query q and returns the ids
// and the page sizes.
func (e *apiEnv) violationPages(q url.Values) (ids []string, sizes []int) {
	e.t.Helper()
	for range 50 {
		var b violationsBody
		want(e.t, e.get("/api/admin/quotas/violations?"+q.Encode()), http.StatusOK).decode(e.t, &b)
		sizes = append(sizes, len(b.Violations))
		for _, v := range b.Violations {
			ids = append(ids, v.ID)
		}
		if b.NextCursor == "" {
			return ids, sizes
		}
		q.Set("cursor", b.NextCursor)
	}
	e.t.Fatal("the violations do not end")
	return nil, nil
}

func TestViolations(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *apiEnv) {
		var empty violationsBody
		if want(t, e.get("/api/admin/quotas/violations"), http.StatusOK).decode(t, &empty); empty.Violations == nil || len(empty.Violations) != 0 || empty.NextCursor != "" {
			t.Errorf("no violations: %+v", empty)
		}
		e.writeViolations()
		ids := func(from, to, step int) []string { // newest first
			var s []string
			for i := to; i >= from; i -= step {
				s = append(s, fmt.Sprintf("r1-%03d", i))
			}
			return s
		}
		rfc := func(t time.Time) string { return t.Format(time.RFC3339) }
		for _, tc := range []struct {
			name  string
			q     url.Values
			ids   []string
			sizes []int
		}{
			{"all", url.Values{}, ids(0, 24, 1), []int{25}},
			{"pages", url.Values{"limit": {"10"}}, ids(0, 24, 1), []int{10, 10, 5}},
			{"subject", url.Values{"subject": {"user:bob"}, "limit": {"5"}}, ids(1, 23, 2), []int{5, 5, 2}},
			{"since", url.Values{"since": {rfc(violationAt(20))}}, ids(20, 24, 1), []int{5}},
			{"until", url.Values{"until": {rfc(violationAt(5))}, "limit": {"3"}}, ids(0, 4, 1), []int{3, 2}},
			{"since and until", url.Values{"since": {rfc(violationAt(10))}, "until": {rfc(violationAt(14))}, "subject": {"key:acme-prod"}}, ids(10, 12, 2), []int{2}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, sizes := e.violationPages(tc.q)
				if fmt.Sprint(got) != fmt.Sprint(tc.ids) || fmt.Sprint(sizes) != fmt.Sprint(tc.sizes) {
					t.Errorf("got %v in pages %v, want %v in %v", got, sizes, tc.ids, tc.sizes)
				}
			})
		}
		var b violationsBody
		want(t, e.get("/api/admin/quotas/violations?limit=3"), http.StatusOK).decode(t, &b)
		v := b.Violations
		if v[0].ID != "r1-024" || !v[0].At.Equal(violationAt(24)) || v[0].Subject != "key:acme-prod" || v[0].KeyID != "acme-prod" || v[0].Route != "confirm" ||
			v[0].Method != "POST" || v[0].Kind != "rate_limited" || v[0].Limit.Name != "confirm-1s" || v[0].Limit.Window != "1s" || v[0].Limit.Period != "" || v[0].Shadow {
			t.Errorf("a rate violation: %+v", v[0])
		}
		if v[1].Subject != "user:bob" || v[1].Kind != "quota_exceeded" || v[1].Limit.Period != "daily" || v[1].Limit.Window != "" || !v[1].Shadow {
			t.Errorf("a shadow quota violation: %+v", v[1])
		}

		for _, tc := range []struct{ query, want string }{
			{"cursor=garbage", "cursor: not a cursor this endpoint returned"},
			// Well-formed, but of an ID a database cannot take as text.
			{"cursor=" + quota.ViolationCursor(quota.Violation{ID: "\x00", At: violationAt(3)}), "cursor: not a cursor this endpoint returned"},
			{"cursor=" + quota.ViolationCursor(quota.Violation{ID: "\xff", At: violationAt(3)}), "cursor: not a cursor this endpoint returned"},
			{"cursor=" + quota.ViolationCursor(quota.Violation{ID: "r1-003\x00", At: violationAt(3)}), "cursor: not a cursor this endpoint returned"},
			{"since=yesterday", `since: must be RFC3339 (2026-03-08T12:00:00Z), got "yesterday"`},
			{"until=2026-13-01T00:00:00Z", "until: must be RFC3339"},
			{"since=2026-03-10T12:00:00Z&until=2026-03-10T11:00:00Z", "until: must be after since"},
			{"limit=0", `limit: must be an integer from 1 to 1000, got "0"`},
			{"limit=1001", `limit: must be an integer from 1 to 1000, got "1001"`},
			{"limit=abc", `limit: must be an integer from 1 to 1000, got "abc"`},
			{"limit=1&limit=2", "limit: given 2 times, at most once"},
			{"subjet=user:bob", `unknown parameter "subjet"`},
		} {
			wantError(t, e.get("/api/admin/quotas/violations?"+tc.query), http.StatusBadRequest, "invalid_request", tc.want)
		}
	})
}
