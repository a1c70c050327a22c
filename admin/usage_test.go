package admin_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/storetest"
)

// usageBody is the shape of one subject's usage.
type usageBody struct {
	Subject    string `json:"subject"`
	User       string `json:"user"`
	Plan       string `json:"plan"`
	Reputation int    `json:"reputation"`
	Rate       []struct {
		Name         string `json:"name"`
		Limit        int64  `json:"limit"`
		Window       string `json:"window"`
		Used         int64  `json:"used"`
		Remaining    int64  `json:"remaining"`
		ResetSeconds int64  `json:"reset_seconds"`
	} `json:"rate"`
	Quota []struct {
		Name         string    `json:"name"`
		Limit        int64     `json:"limit"`
		Period       string    `json:"period"`
		Used         int64     `json:"used"`
		Remaining    int64     `json:"remaining"`
		ResetSeconds int64     `json:"reset_seconds"`
		PeriodStart  time.Time `json:"period_start"`
	} `json:"quota"`
}

type usageListBody struct {
	Subjects   []usageBody `json:"subjects"`
	NextCursor string      `json:"next_cursor"`
}

func (e *apiEnv) usage(subject string) usageBody {
	e.t.Helper()
	var u usageBody
	want(e.t, e.get("/api/admin/quotas/usage?subject="+subject), http.StatusOK).decode(e.t, &u)
	return u
}

// ranked returns the subjects of every page of the usage list, pages
// of size limit, and checks each page's usage of them.
func (e *apiEnv) ranked(limit string) (subjects []string, pages int) {
	e.t.Helper()
	cursor := ""
	for range 20 {
		var l usageListBody
		want(e.t, e.get("/api/admin/quotas/usage?limit="+limit+"&cursor="+cursor), http.StatusOK).decode(e.t, &l)
		pages++
		for _, s := range l.Subjects {
			subjects = append(subjects, s.Subject)
		}
		if cursor = l.NextCursor; cursor == "" {
			return subjects, pages
		}
	}
	e.t.Fatal("the usage list does not end")
	return nil, 0
}

func TestUsage(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *apiEnv) {
		e.requests("key:acme-prod", 15) // alice's pro quota: 15/1000
		e.requests("key:ci-bot", 8)     // free, alone: 8/100 a day
		e.requests("ip:203.0.113.9", 5) // anonymous: 5/50 a day
		e.requests("user:bob", 3)       // free: 3/100 a day
		e.clock.Advance(250 * time.Millisecond)

		u := e.usage("key:acme-prod")
		if u.Subject != "key:acme-prod" || u.User != "alice" || u.Plan != "pro" || u.Reputation != 100 {
			t.Errorf("usage: %+v", u)
		}
		if r := u.Rate; len(r) != 1 || r[0].Name != "acme-prod-1s" || r[0].Limit != 20 || r[0].Window != "1s" || r[0].Used != 15 || r[0].Remaining != 5 || r[0].ResetSeconds != 1 {
			t.Errorf("rate: %+v", r)
		}
		month := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
		if q := u.Quota; len(q) != 1 || q[0].Name != "pro-monthly" || q[0].Limit != 1000 || q[0].Period != "monthly" || q[0].Used != 15 ||
			q[0].Remaining != 985 || !q[0].PeriodStart.Equal(month) || q[0].ResetSeconds != 1857600 { // until April, rounded up
			t.Errorf("quota: %+v", q)
		}
		if u := e.usage("user:alice"); u.Quota[0].Used != 15 || len(u.Rate) != 1 || u.Rate[0].Used != 0 {
			t.Errorf("alice shares the key's quota, not its rate window: %+v", u)
		}
		if u := e.usage("ip:203.0.113.9"); u.Plan != "anonymous" || u.Quota[0].Used != 5 || u.User != "" {
			t.Errorf("ip: %+v", u)
		}
		if u := e.usage("ip:::ffff:203.0.113.9"); u.Subject != "ip:203.0.113.9" {
			t.Errorf("a v4-mapped address reads as the proxy names it: %+v", u.Subject)
		}
		// Reading charges nothing.
		if u := e.usage("key:acme-prod"); u.Rate[0].Used != 15 || u.Quota[0].Used != 15 {
			t.Errorf("a second read: %+v", u)
		}
		wantError(t, e.get("/api/admin/quotas/usage?subject=key:nobody"), http.StatusNotFound, "not_found", `subject: key "nobody" is not configured`)
		wantError(t, e.get("/api/admin/quotas/usage?subject=key:"+acmeSecret), http.StatusBadRequest, "invalid_request", "secret")
		wantError(t, e.get("/api/admin/quotas/usage?subject=user:"+acmeSecret), http.StatusBadRequest, "invalid_request", "secret")
		wantError(t, e.get("/api/admin/quotas/usage?subject="+acmeSecret), http.StatusBadRequest, "invalid_request", "secret")
		wantError(t, e.get("/api/admin/quotas/usage?subject=plan:free"), http.StatusBadRequest, "invalid_request", "subject: must be key:<id>, user:<id> or ip:<address>")
		wantError(t, e.get("/api/admin/quotas/usage?subject=ip:nope"), http.StatusBadRequest, "invalid_request", `subject: "nope" is not an IP address`)

		// The list, from the ledger's candidates, ordered by the fullest
		// quota: 5/50, 8/100, 3/100, 15/1000.
		e.flush()
		order := "ip:203.0.113.9 key:ci-bot user:bob user:alice"
		for _, limit := range []string{"50", "1", "2", "3"} {
			got, pages := e.ranked(limit)
			if strings.Join(got, " ") != order {
				t.Errorf("limit %s: ranked %v, want %s", limit, got, order)
			}
			if n := map[string]int{"50": 1, "1": 4, "2": 2, "3": 2}[limit]; pages != n {
				t.Errorf("limit %s: %d pages, want %d", limit, pages, n)
			}
		}
		// The numbers come from the hot path, exact, ahead of the ledger.
		e.clock.Advance(time.Second)
		e.requests("user:bob", 10)
		var l usageListBody
		want(t, e.get("/api/admin/quotas/usage?limit=1"), http.StatusOK).decode(t, &l)
		if len(l.Subjects) != 1 || l.Subjects[0].Subject != "user:bob" || l.Subjects[0].Quota[0].Used != 13 || l.NextCursor == "" {
			t.Errorf("first after bob's burst: %+v", l)
		}
		wantError(t, e.get("/api/admin/quotas/usage?cursor=bm9wZQ"), http.StatusBadRequest, "invalid_request", "cursor: not a cursor")
		wantError(t, e.get("/api/admin/quotas/usage?limit=abc"), http.StatusBadRequest, "invalid_request", `limit: must be an integer from 1 to 1000, got "abc"`)
	})
}

func TestUsageListWithoutQuotas(t *testing.T) {
	e := newAPI(t, backends[0].open(t), "")
	cfg := policyConfig()
	for i := range cfg.Plans {
		cfg.Plans[i].Quota = nil
	}
	pol, err := limiter.NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.policy.Store(pol)
	e.requests("key:ci-bot", 3)
	var l usageListBody
	if want(t, e.get("/api/admin/quotas/usage"), http.StatusOK).decode(t, &l); l.Subjects == nil || len(l.Subjects) != 0 || l.NextCursor != "" {
		t.Errorf("no quotas: %+v, want an empty list", l)
	}
}

func TestReset(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *apiEnv) {
		pol := e.policy.Load()
		confirm, search := pol.Match("POST", "/confirm"), pol.Match("GET", "/search/x")
		e.requests("key:acme-prod", 10)
		e.request("key:acme-prod", confirm) // cost 5, and 1 on the route's own window
		e.request("key:acme-prod", search)  // 1 on the global window
		e.requests("key:ci-bot", 4)
		e.flush()
		if u := e.usage("key:acme-prod"); u.Quota[0].Used != 16 || u.Rate[0].Used != 16 {
			t.Fatalf("before the reset: %+v", u)
		}

		var u usageBody
		want(t, e.post("/api/admin/quotas/reset", `{"subject":"key:acme-prod"}`), http.StatusOK).decode(t, &u)
		if u.Subject != "key:acme-prod" || u.Rate[0].Used != 0 || u.Rate[0].Remaining != 20 || u.Quota[0].Used != 0 || u.Quota[0].Remaining != 1000 {
			t.Errorf("the answer: %+v, want the usage after the reset", u)
		}
		// The hot path: the route's own window is reset, the global one
		// (shared by every caller) is not.
		now := e.clock.Now()
		peek := func(limits []limiter.Limit) limiter.Decision {
			d, err := e.lim.Decide(e.ctx, limits, 0)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		confirmLimits := pol.Limits(nil, e.subject("key:acme-prod"), confirm, now)
		if d := peek(confirmLimits); d.Statuses[0].Used != 0 || d.Statuses[1].Used != 0 || d.Statuses[2].Used != 0 {
			t.Errorf("hot path after the reset: %+v", d.Statuses)
		}
		searchLimits := pol.Limits(nil, e.subject("key:ci-bot"), search, now)
		if d := peek(searchLimits); d.Statuses[len(d.Statuses)-1].Used != 1 {
			t.Errorf("the global window: used %d, want 1 (not reset)", d.Statuses[len(d.Statuses)-1].Used)
		}
		if u := e.usage("key:ci-bot"); u.Quota[0].Used != 4 {
			t.Errorf("another subject: %+v, want untouched", u.Quota)
		}
		// The ledger takes the zero.
		e.flush()
		q := confirmLimits[1].Key // alice's monthly quota
		start, _ := monthly().Bounds(now)
		got, err := e.store.Load(e.ctx, []limiter.Counter{{Key: q, Start: start}})
		if err != nil || got[0].Used != 0 || got[0].Seq == 0 {
			t.Errorf("ledger after the reset: %+v, %v, want used 0", got, err)
		}
		// A hot path that lost its counters starts again from the ledger:
		// the zero.
		e.lim = limiter.New(e.hot(), &limiter.Options{Ledger: e.recorder, Timeout: -1})
		e.srv = newServer(e)
		if u := e.usage("key:acme-prod"); u.Quota[0].Used != 0 {
			t.Errorf("a fresh hot path reads %d from the ledger, want 0", u.Quota[0].Used)
		}

		log := e.audits()
		if len(log) != 1 || log[0].Action != "quota.reset" || log[0].Subject != "key:acme-prod" || log[0].Actor != "admin@192.0.2.1" {
			t.Fatalf("audit log: %+v", log)
		}
		var detail struct{ Limits []string }
		if err := json.Unmarshal(log[0].Detail, &detail); err != nil || strings.Join(detail.Limits, " ") != "acme-prod-1s pro-monthly confirm-1s" {
			t.Errorf("audit detail: %s, want the limits reset", log[0].Detail)
		}

		wantError(t, e.post("/api/admin/quotas/reset", `{"subject":"key:nobody"}`), http.StatusNotFound, "not_found", "nobody")
		wantError(t, e.post("/api/admin/quotas/reset", `{"subject":"key:acme-prod","all":true}`), http.StatusBadRequest, "invalid_request", `unknown field "all"`)
		wantError(t, e.post("/api/admin/quotas/reset", `{}`), http.StatusBadRequest, "invalid_request", "subject: must be")
		wantError(t, e.post("/api/admin/quotas/reset", `{"SUBJECT":"key:acme-prod"}`), http.StatusBadRequest, "invalid_request", `unknown field "SUBJECT"`)
		wantError(t, e.post("/api/admin/quotas/reset", `{"subject":"key:ci-bot","Subject":"key:acme-prod"}`), http.StatusBadRequest, "invalid_request", `unknown field "Subject"`)
		wantError(t, e.post("/api/admin/quotas/reset", `{"subject":"key:ci-bot","subject":"key:acme-prod"}`), http.StatusBadRequest, "invalid_request", `duplicate field "subject"`)
		if n := len(e.audits()); n != 1 {
			t.Errorf("refused resets were audited: %d entries", n)
		}
	})
}

// BenchmarkUsageList: a page of the usage list when 1000 subjects use a
// quota. The first page reads every subject from the hot path and ranks
// them, one after the other (readers=1) and side by side (readers=32,
// as served); on Redis the concurrent reads share round trips. A next
// page follows the first page's ranking and reads only its own subjects.
func BenchmarkUsageList(b *testing.B) {
	for _, h := range hotPaths {
		for _, readers := range []int{1, 32} {
			for _, page := range []string{"first", "next"} {
				b.Run(fmt.Sprintf("%s/readers=%d/%s", h.name, readers, page), func(b *testing.B) {
					defer admin.SetUsageReaders(readers)()
					clock := storetest.NewClock(t0)
					e := newAPIOn(b, backends[0].open(b), h.open(b, clock), clock, "")
					for i := range 1000 {
						e.requests(fmt.Sprintf("ip:10.0.%d.%d", i/256, i%256), 1+i%5) // the anonymous plan admits 5 a second
					}
					e.flush()
					target := "/api/admin/quotas/usage?limit=50"
					if page == "next" {
						var l usageListBody
						want(b, e.get(target), http.StatusOK).decode(b, &l)
						target += "&cursor=" + l.NextCursor
					}
					b.ResetTimer()
					for b.Loop() {
						var l usageListBody
						want(b, e.get(target), http.StatusOK).decode(b, &l)
						if len(l.Subjects) != 50 || l.Subjects[0].Quota[0].Used != 5 || l.NextCursor == "" {
							b.Fatalf("page: %d subjects, the first %+v", len(l.Subjects), l.Subjects[0])
						}
					}
				})
			}
		}
	}
}

// TestUsageListEverySubject: the list ranks every subject of a
// current-period counter by its fullest quota, however many there are
// and whatever their absolute usage: a subject at 100% of a quota of 1 is
// first when 1001 others have used more requests but less of their
// quotas, and every page together lists each subject once.
func TestUsageListEverySubject(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *apiEnv) {
		cfg := policyConfig()
		cfg.Users = append(cfg.Users, limiter.User{ID: "zz-small",
			Limits: limiter.Limits{Quota: []limiter.Spec{{Limit: 1, Period: daily()}}}})
		pol, err := limiter.NewPolicy(cfg)
		if err != nil {
			t.Fatal(err)
		}
		e.policy.Store(pol)
		e.requests("user:zz-small", 1) // 1/1: 100%
		const n = 1001
		for i := range n {
			e.requests(fmt.Sprintf("ip:10.1.%d.%d", i/256, i%256), 2) // 2/50: 4%
		}
		e.flush()
		for _, limit := range []string{"1000", "300"} {
			got, pages := e.ranked(limit)
			if len(got) != n+1 || got[0] != "user:zz-small" {
				first := ""
				if len(got) > 0 {
					first = got[0]
				}
				t.Fatalf("limit %s: %d subjects on %d pages, the first %q; want %d, user:zz-small first", limit, len(got), pages, first, n+1)
			}
			seen := map[string]bool{}
			for _, s := range got {
				if seen[s] {
					t.Errorf("limit %s: %s listed twice", limit, s)
				}
				seen[s] = true
			}
		}
	})
}

// TestUsageListCurrentPeriods: counters of periods that are over (the
// earlier days of a month that has a monthly quota) are not ranked and
// leave no subject out.
func TestUsageListCurrentPeriods(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *apiEnv) {
		for i := range 1001 {
			e.requests(fmt.Sprintf("ip:10.2.%d.%d", i/256, i%256), 4) // yesterday: 4/50
		}
		e.flush()
		e.clock.Advance(24 * time.Hour)
		e.requests("user:bob", 3) // today: 3/100 a day, 3/2000 a month
		e.flush()
		if got, _ := e.ranked("1000"); len(got) != 1 || got[0] != "user:bob" {
			t.Errorf("ranked %d subjects %v, want only user:bob", len(got), got[:min(len(got), 3)])
		}
	})
}

// TestUsageListSnapshot: the pages after the first continue the ranking
// the first page took, so traffic between pages neither skips nor
// repeats a subject; the numbers on each page are read when it is
// served. A cursor older than usageSnapshotTTL continues the live
// ranking after its position.
func TestUsageListSnapshot(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *apiEnv) {
		e.rankable()
		page := func(cursor string) usageListBody {
			t.Helper()
			var l usageListBody
			want(t, e.get("/api/admin/quotas/usage?limit=2&cursor="+cursor), http.StatusOK).decode(t, &l)
			return l
		}
		names := func(l usageListBody) string {
			var s []string
			for _, v := range l.Subjects {
				s = append(s, v.Subject)
			}
			return strings.Join(s, " ")
		}
		first := page("")
		if got := names(first); got != "ip:203.0.113.9 key:ci-bot" || first.NextCursor == "" {
			t.Fatalf("first page: %s, cursor %q", got, first.NextCursor)
		}
		// bob passes everyone, alice passes ci-bot: a live ranking would
		// skip both.
		e.clock.Advance(2 * time.Second)
		e.requests("user:bob", 9) // 12/100
		for range 4 {
			e.clock.Advance(2 * time.Second)
			e.requests("key:acme-prod", 19)
		} // 91/1000
		second := page(first.NextCursor)
		if got := names(second); got != "user:bob user:alice" || second.NextCursor != "" {
			t.Fatalf("second page: %s, cursor %q; want user:bob user:alice, the end", got, second.NextCursor)
		}
		if q := second.Subjects[0].Quota[0]; q.Used != 12 {
			t.Errorf("bob on the second page: used %d, want 12, read when served", q.Used)
		}

		// An expired snapshot: the live ranking after the cursor's
		// position (8/100 of ci-bot), bob's 12/100 now before it.
		first = page("")
		if got := names(first); got != "user:bob ip:203.0.113.9" {
			t.Fatalf("first page again: %s", got)
		}
		e.clock.Advance(10 * time.Minute)
		if got := names(page(first.NextCursor)); got != "user:alice key:ci-bot" {
			t.Errorf("after the snapshot expired: %s, want user:alice key:ci-bot", got)
		}
	})
}

// TestUsageIPv6Subject: an IPv6 caller is shown as its /64, which the
// proxy counts it by, whether asked by address or by network.
func TestUsageIPv6Subject(t *testing.T) {
	e := newAPI(t, backends[0].open(t), "")
	for _, q := range []string{"ip:2001:db8:1:2::5", "ip:2001:db8:1:2::/64", "ip:2001:db8:1:2:ffff::1"} {
		var v struct {
			Subject string `json:"subject"`
		}
		want(t, e.get("/api/admin/quotas/usage?subject="+url.QueryEscape(q)), http.StatusOK).decode(t, &v)
		if v.Subject != "ip:2001:db8:1:2::/64" {
			t.Errorf("usage of %s: subject %q, want ip:2001:db8:1:2::/64", q, v.Subject)
		}
	}
	wantError(t, e.get("/api/admin/quotas/usage?subject="+url.QueryEscape("ip:2001:db8::/48")), http.StatusBadRequest, "invalid_request", "not an IP address")
}

// TestUsageListDroppedSubject: a subject of a kept ranking that the
// configuration no longer knows (a key removed by a reload between
// pages) is left out, and the walk moves on past it: a page may be
// shorter than the limit, even empty, but no page repeats a cursor and
// the list ends.
func TestUsageListDroppedSubject(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *apiEnv) {
		e.rankable()
		cfg := policyConfig()
		cfg.Keys = slices.DeleteFunc(cfg.Keys, func(k limiter.Key) bool { return k.ID == "ci-bot" })
		reloaded, err := limiter.NewPolicy(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		seen := map[string]bool{}
		cursor, pages := "", 0
		for {
			var l usageListBody
			want(t, e.get("/api/admin/quotas/usage?limit=1&cursor="+cursor), http.StatusOK).decode(t, &l)
			pages++
			for _, s := range l.Subjects {
				got = append(got, s.Subject)
			}
			if pages == 1 {
				e.policy.Store(reloaded) // ci-bot, next in the ranking, is gone
			}
			if cursor = l.NextCursor; cursor == "" {
				break
			}
			if seen[cursor] {
				t.Fatalf("page %d repeats the cursor %q, after %v", pages, cursor, got)
			}
			seen[cursor] = true
			if pages > 10 {
				t.Fatalf("the usage list does not end: %v", got)
			}
		}
		// ci-bot's page is empty: 4 pages for 3 subjects.
		if s := strings.Join(got, " "); s != "ip:203.0.113.9 user:bob user:alice" || pages != 4 {
			t.Errorf("listed %s on %d pages, want ip:203.0.113.9 user:bob user:alice on 4", s, pages)
		}
	})
}

// rankable gives four subjects usage that ranks them, fullest first:
// ip:203.0.113.9 (5/50), key:ci-bot (8/100), user:bob (3/100),
// key:acme-prod (15/1000), and flushes it to the ledger.
func (e *apiEnv) rankable() {
	e.requests("ip:203.0.113.9", 5)
	e.requests("key:ci-bot", 8)
	e.requests("user:bob", 3)
	e.requests("key:acme-prod", 15)
	e.flush()
}
