package admin_test

import (
	"encoding/csv"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

type countsBody struct {
	Allowed       int64 `json:"allowed"`
	RateLimited   int64 `json:"rate_limited"`
	QuotaExceeded int64 `json:"quota_exceeded"`
	Total         int64 `json:"total"`
}

type analyticsBody struct {
	From    time.Time  `json:"from"`
	To      time.Time  `json:"to"`
	Bucket  string     `json:"bucket"`
	GroupBy string     `json:"group_by"`
	Totals  countsBody `json:"totals"`
	Points  []struct {
		At time.Time `json:"at"`
		countsBody
	} `json:"points"`
	Series []struct {
		Group  string     `json:"group"`
		Totals countsBody `json:"totals"`
		Points []struct {
			At time.Time `json:"at"`
			countsBody
		} `json:"points"`
	} `json:"series"`
	TopSubjects []struct {
		Subject string `json:"subject"`
		Limited int64  `json:"limited"`
		Total   int64  `json:"total"`
	} `json:"top_subjects"`
	Trend struct {
		From      time.Time           `json:"from"`
		To        time.Time           `json:"to"`
		Totals    countsBody          `json:"totals"`
		ChangePct map[string]*float64 `json:"change_pct"`
	} `json:"trend"`
	Spikes []struct {
		Group  string    `json:"group"`
		At     time.Time `json:"at"`
		Metric string    `json:"metric"`
		Value  int64     `json:"value"`
	} `json:"spikes"`
}

// day is the analytics tests' range: 2026-03-10, midnight to noon.
var day = time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)

// writeRollups stores a day of traffic, from noon the day before (the
// previous range) to noon: key:acme-prod steady at 30 an hour, written
// by two replicas; ip:203.0.113.9 at 2 an hour with a burst at 08:00
// (200 allowed, 50 refused); user:bob 3 refused by a quota at 10:00.
func (e *apiEnv) writeRollups() {
	e.t.Helper()
	var rs []quota.Rollup
	for h := -12; h < 12; h++ {
		m := day.Add(time.Duration(h)*time.Hour + 5*time.Minute)
		rs = append(rs,
			quota.Rollup{Minute: m, Subject: "key:acme-prod", Route: "confirm", User: "alice", Replica: "r1", Allowed: 20},
			quota.Rollup{Minute: m, Subject: "key:acme-prod", Route: "confirm", User: "alice", Replica: "r2", Allowed: 10},
			quota.Rollup{Minute: m.Add(time.Minute), Subject: "ip:203.0.113.9", Replica: "r1", Allowed: 2})
	}
	rs = append(rs,
		quota.Rollup{Minute: day.Add(8*time.Hour + 30*time.Minute), Subject: "ip:203.0.113.9", Replica: "r2", Allowed: 200, RateLimited: 50},
		quota.Rollup{Minute: day.Add(10 * time.Hour), Subject: "user:bob", Route: "search", User: "bob", Replica: "r1", QuotaExceeded: 3},
		quota.Rollup{Minute: day.Add(12 * time.Hour), Subject: "user:bob", Replica: "r1", Allowed: 1000}) // at "to": outside
	if err := e.store.WriteRollups(e.ctx, rs); err != nil {
		e.t.Fatal(err)
	}
}

func (e *apiEnv) analytics(query string) analyticsBody {
	e.t.Helper()
	var a analyticsBody
	want(e.t, e.get("/api/admin/quotas/analytics?"+query), http.StatusOK).decode(e.t, &a)
	return a
}

func TestAnalytics(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *apiEnv) {
		e.writeRollups()
		a := e.analytics("from=2026-03-10T00:00:00Z&to=2026-03-10T12:00:00Z&bucket=1h")
		if !a.From.Equal(day) || !a.To.Equal(day.Add(12*time.Hour)) || a.Bucket != "1h" || a.GroupBy != "subject" {
			t.Errorf("range: %v %v %s %s", a.From, a.To, a.Bucket, a.GroupBy)
		}
		if a.Totals != (countsBody{584, 50, 3, 637}) {
			t.Errorf("totals: %+v", a.Totals)
		}
		if len(a.Points) != 12 || a.Points[8].Total != 282 || a.Points[8].RateLimited != 50 || a.Points[0].Total != 32 || !a.Points[11].At.Equal(day.Add(11*time.Hour)) {
			t.Errorf("points: %+v", a.Points)
		}
		var groups []string
		for _, s := range a.Series {
			groups = append(groups, fmt.Sprintf("%s=%d/%d", s.Group, s.Totals.Total, len(s.Points)))
		}
		if got := strings.Join(groups, " "); got != "key:acme-prod=360/12 ip:203.0.113.9=274/12 user:bob=3/1" {
			t.Errorf("series (group=total/points): %s", got)
		}
		if p := a.Series[0].Points[3]; !p.At.Equal(day.Add(3*time.Hour)) || p.Allowed != 30 {
			t.Errorf("two replicas' counts are summed: %+v", p)
		}
		var top []string
		for _, s := range a.TopSubjects {
			top = append(top, fmt.Sprintf("%s=%d/%d", s.Subject, s.Limited, s.Total))
		}
		if got := strings.Join(top, " "); got != "ip:203.0.113.9=50/274 user:bob=3/3 key:acme-prod=0/360" {
			t.Errorf("top subjects (limited/total): %s", got)
		}
		pct := func(k string) string {
			if p := a.Trend.ChangePct[k]; p != nil {
				return fmt.Sprint(*p)
			}
			return "null"
		}
		if !a.Trend.From.Equal(day.Add(-12*time.Hour)) || !a.Trend.To.Equal(day) || a.Trend.Totals != (countsBody{384, 0, 0, 384}) ||
			pct("allowed") != "52.1" || pct("rate_limited") != "null" || pct("quota_exceeded") != "null" || pct("total") != "65.9" {
			t.Errorf("trend: %+v %s %s %s %s", a.Trend, pct("allowed"), pct("rate_limited"), pct("quota_exceeded"), pct("total"))
		}
		// The burst is a spike, of its subject and of all; the steady
		// series, the small one, and the hours after the burst are not.
		var spikes []string
		for _, s := range a.Spikes {
			spikes = append(spikes, fmt.Sprintf("%s@%02d:%s=%d", s.Group, s.At.Hour(), s.Metric, s.Value))
		}
		if got := strings.Join(spikes, " "); got != "*@08:limited=50 *@08:requests=282 ip:203.0.113.9@08:limited=50 ip:203.0.113.9@08:requests=252" {
			t.Errorf("spikes: %s", got)
		}

		// Other groupings.
		groupsOf := func(a analyticsBody) string {
			var g []string
			for _, s := range a.Series {
				g = append(g, fmt.Sprintf("%q=%d", s.Group, s.Totals.Total))
			}
			return strings.Join(g, " ")
		}
		if got := groupsOf(e.analytics("from=2026-03-10T00:00:00Z&to=2026-03-10T12:00:00Z&group_by=route")); got != `"confirm"=360 ""=274 "search"=3` {
			t.Errorf("by route: %s", got)
		}
		if got := groupsOf(e.analytics("from=2026-03-10T00:00:00Z&to=2026-03-10T12:00:00Z&group_by=user")); got != `"user:alice"=360 "ip:203.0.113.9"=274 "user:bob"=3` {
			t.Errorf("by user (a subject without a user alone): %s", got)
		}
		// Days, with the defaults: to is now (rounded up to the day),
		// from a day before (rounded down).
		a = e.analytics("bucket=1d")
		if !a.From.Equal(day.AddDate(0, 0, -1)) || !a.To.Equal(day.AddDate(0, 0, 1)) || len(a.Points) != 2 ||
			a.Points[0].Total != 384 || a.Points[1].Total != 637+1000 {
			t.Errorf("days: %v..%v %+v", a.From, a.To, a.Points)
		}
		// Minutes, unaligned bounds.
		a = e.analytics("from=2026-03-10T08:29:30Z&to=2026-03-10T08:31:00Z&bucket=1m")
		if len(a.Points) != 2 || a.Points[1].Total != 250 || !a.From.Equal(day.Add(8*time.Hour+29*time.Minute)) {
			t.Errorf("minutes: %v %+v", a.From, a.Points)
		}

		// CSV.
		r := want(t, e.get("/api/admin/quotas/analytics?from=2026-03-10T00:00:00Z&to=2026-03-10T12:00:00Z&format=csv"), http.StatusOK)
		if ct, cd := r.Header.Get("Content-Type"), r.Header.Get("Content-Disposition"); !strings.HasPrefix(ct, "text/csv") ||
			cd != `attachment; filename="gaia-analytics-subject-20260310T0000Z-20260310T1200Z.csv"` {
			t.Errorf("CSV headers: %q %q", ct, cd)
		}
		rows, err := csv.NewReader(strings.NewReader(string(r.Body))).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 26 || strings.Join(rows[0], ",") != "bucket_start,subject,allowed,rate_limited,quota_exceeded,total" ||
			strings.Join(rows[1], ",") != "2026-03-10T00:00:00Z,ip:203.0.113.9,2,0,0,2" ||
			strings.Join(rows[2], ",") != "2026-03-10T00:00:00Z,key:acme-prod,30,0,0,30" ||
			strings.Join(rows[25], ",") != "2026-03-10T11:00:00Z,key:acme-prod,30,0,0,30" {
			t.Errorf("CSV: %d rows, %q %q %q ... %q", len(rows), rows[0], rows[1], rows[2], rows[len(rows)-1])
		}
	})
}

func TestAnalyticsQuery(t *testing.T) {
	e := newAPI(t, backends[0].open(t), "")
	for _, tc := range []struct{ query, want string }{
		{"bucket=5m", `bucket: must be 1m, 1h or 1d, got "5m"`},
		{"group_by=plan", `group_by: must be subject, route or user, got "plan"`},
		{"format=xml", `format: must be json or csv, got "xml"`},
		{"from=yesterday", `from: must be RFC3339 (2026-03-08T12:00:00Z), got "yesterday"`},
		{"to=1700000000", `to: must be RFC3339`},
		{"from=2026-03-10T12:00:00Z&to=2026-03-10T11:00:00Z", "from: must be before to"},
		{"from=2026-03-10T12:00:00Z&to=2026-03-10T12:00:00Z", "from: must be before to"},
		{"from=2026-03-01T00:00:00Z&to=2026-03-10T00:00:00Z&bucket=1m", "from, to: the range holds more than 10000 buckets of 1m"},
		{"from=0001-01-01T00:00:00Z&to=9999-12-31T00:00:00Z&bucket=1d", "from, to: the range holds more than 10000 buckets of 1d"},
		{"bucket=1h&bucket=1d", "bucket: given 2 times"},
		{"limit=10", `unknown parameter "limit"`},
	} {
		wantError(t, e.get("/api/admin/quotas/analytics?"+tc.query), http.StatusBadRequest, "invalid_request", tc.want)
	}
	// 10000 buckets is fine.
	e.analytics("from=2026-03-01T00:00:00Z&to=2026-03-07T22:40:00Z&bucket=1m")
}
