package admin

import (
	"crypto/sha256"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// fuzzNow is the clock of the parser tests.
var fuzzNow = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

// fuzzPolicy has two plans and one key, whose secret is "fuzz-secret".
func fuzzPolicy(t testing.TB) *limiter.Policy {
	pol, err := limiter.NewPolicy(limiter.PolicyConfig{
		DefaultPlan: "free",
		Plans: []limiter.Plan{
			{Name: "free", Limits: limiter.Limits{Rate: []limiter.Spec{{Limit: 10, Window: time.Second}}}},
			{Name: "pro"},
		},
		Keys: []limiter.Key{{ID: "acme-prod", Hash: sha256.Sum256([]byte("fuzz-secret")), Plan: "pro"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// badRequestOnly fails unless err is a 400 invalid_request with a
// message.
func badRequestOnly(t *testing.T, err error, input string) {
	t.Helper()
	var e *apiError
	if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Code != "invalid_request" || e.Message == "" {
		t.Fatalf("%q: got %v, want a 400 invalid_request naming the problem", input, err)
	}
}

func FuzzRuleBody(f *testing.F) {
	for _, seed := range []string{
		`{"subject":"key:acme-prod","rate":[{"limit":20,"window":"1s"}],"quota":[],"expires_at":"2026-04-01T00:00:00Z"}`,
		`{"subject":"plan:free","quota":[{"name":"q","limit":5,"period":"hourly","scope":"user","shadow":true,"count":"success"}]}`,
		`{"subject":"user:alice","rate":[]}`,
		`{"subject":"user:alice","rate":[{"limit":1,"window":"48h"}]}`,
		`{"subject":"user:alice","rate":[{"limit":"1"}]}`,
		`{"subject":"key:fuzz-secret","rate":[]}`,
		`{"subject":"user:fuzz-secret","rate":[]}`,
		`{"subject":"plan:gold","rate":[]}`,
		`{"subject":"user:a","quotas":[]}`,
		`{"subject":"user:a","rate":[]} trailing`,
		`{"subject":"user:a","rate":[null,1,"x",[]]}`,
		`{"subject":"user:a","rate":[],"expires_at":"2000-01-01T00:00:00Z"}`,
		`{"subject":"user:a","rate":[{"limit":1e400,"window":"1s"}]}`,
		`{"subject":"\u0000","rate":[]}`,
		``, `null`, `[]`, `{`, `{"subject":`, "{\"subject\":\"user:\xff\",\"rate\":[]}",
	} {
		f.Add([]byte(seed))
	}
	pol := fuzzPolicy(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		rule, err := parseRule(body, pol, fuzzNow)
		if err != nil {
			badRequestOnly(t, err, string(body))
			if strings.Contains(string(body), `:fuzz-secret"`) && strings.Contains(err.Error(), "fuzz-secret") {
				t.Fatalf("the error repeats a key's secret: %v", err)
			}
			return
		}
		// What the API accepts, the stores accept.
		if _, _, err := quota.EncodeRule(rule); err != nil {
			t.Fatalf("%q: accepted, but the stores refuse it: %v", body, err)
		}
		if rule.Limits.Rate == nil && rule.Limits.Quota == nil {
			t.Fatalf("%q: accepted a rule without limits", body)
		}
		if !rule.ExpiresAt.IsZero() && !rule.ExpiresAt.After(fuzzNow) {
			t.Fatalf("%q: accepted an expiry in the past: %v", body, rule.ExpiresAt)
		}
		if kind, id, _ := strings.Cut(rule.Subject, ":"); kind == "key" {
			if _, ok := pol.KeyByID(id); !ok {
				t.Fatalf("%q: accepted an unknown key", body)
			}
		}
	})
}

func FuzzAnalyticsQuery(f *testing.F) {
	for _, seed := range []string{
		"", "bucket=1m", "from=2026-03-10T00:00:00Z&to=2026-03-10T12:00:00Z&bucket=1h&group_by=route&format=csv",
		"from=2026-03-10T00:00:30.5+02:00&bucket=1d", "to=2026-03-01T00:00:00Z", "bucket=5m", "group_by=plan",
		"from=0001-01-01T00:00:00Z&to=9999-12-31T23:59:59Z&bucket=1d", "from=2026-03-10T12:00:00Z&to=2026-03-10T12:00:00Z",
		"bucket=1h&bucket=1h", "x=1", "from=%zz", "to=2026-03-10T12:00:00Z&from=2026-03-03T13:20:00Z&bucket=1m",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		values, err := url.ParseQuery(raw)
		if err != nil {
			return // net/http refuses it before us
		}
		p, err := newParams(values, "from", "to", "bucket", "group_by", "format")
		if err != nil {
			badRequestOnly(t, err, raw)
			return
		}
		q, err := parseAnalyticsQuery(p, fuzzNow)
		if err != nil {
			badRequestOnly(t, err, raw)
			return
		}
		n := q.To.Sub(q.From) / q.Bucket
		if !q.From.Before(q.To) || !q.From.Equal(q.From.Truncate(q.Bucket)) || !q.To.Equal(q.To.Truncate(q.Bucket)) || n < 1 || n > maxBuckets {
			t.Fatalf("%q: accepted %v..%v by %v", raw, q.From, q.To, q.Bucket)
		}
		rs := []quota.Rollup{{Minute: q.From, Subject: "s", Allowed: 1}, {Minute: q.lookback(), Subject: "s", RateLimited: 1}}
		if v := analyze(rs, q); len(v.Points) != int(n) || v.Totals.Allowed != 1 {
			t.Fatalf("%q: %d points, totals %+v", raw, len(v.Points), v.Totals)
		}
	})
}

func FuzzViolationQuery(f *testing.F) {
	cursor := quota.ViolationCursor(quota.Violation{ID: "r1-7", At: fuzzNow})
	for _, seed := range []string{
		"", "subject=user:bob&limit=10", "since=2026-03-10T00:00:00Z&until=2026-03-11T00:00:00Z", "cursor=" + cursor,
		"cursor=garbage", "limit=0", "limit=-1", "limit=99999999999999999999", "since=x", "until=2026-03-10T00:00:00Z&since=2026-03-10T00:00:00Z",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		values, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		p, err := newParams(values, "subject", "since", "until", "limit", "cursor")
		if err != nil {
			badRequestOnly(t, err, raw)
			return
		}
		q, err := parseViolationQuery(p)
		if err != nil {
			badRequestOnly(t, err, raw)
			return
		}
		if q.Limit < 1 || q.Limit > 1000 || q.PageSize() != q.Limit {
			t.Fatalf("%q: limit %d", raw, q.Limit)
		}
		if !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until) {
			t.Fatalf("%q: accepted since %v, until %v", raw, q.Since, q.Until)
		}
		if _, _, err := quota.ParseViolationCursor(q.Cursor); q.Cursor != "" && err != nil {
			t.Fatalf("%q: accepted cursor %q", raw, q.Cursor)
		}
	})
}

func FuzzUsageCursor(f *testing.F) {
	for _, seed := range []string{"", pageCursor{usageCursor: usageCursor{0.5, "key:acme-prod"}}.String(), "bm9wZQ", "e30", "eyJmIjoxLCJzIjoiIn0", "!!"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseUsageCursor(s)
		if err != nil {
			badRequestOnly(t, err, s)
			return
		}
		if c == nil {
			if s != "" {
				t.Fatalf("%q: no cursor and no error", s)
			}
			return
		}
		back, err := parseUsageCursor(c.String())
		if err != nil || *back != *c {
			t.Fatalf("%q: %+v does not round-trip: %+v, %v", s, c, back, err)
		}
	})
}

func FuzzSubject(f *testing.F) {
	for _, seed := range []string{"key:acme-prod", "key:fuzz-secret", "key:nope", "user:alice", "user:", "ip:203.0.113.9",
		"ip:::ffff:10.0.0.1", "ip:fe80::1%eth0", "ip:x", "plan:free", "", ":", "key", "user:fuzz-secret", "ip:fuzz-secret"} {
		f.Add(seed)
	}
	pol := fuzzPolicy(f)
	f.Fuzz(func(t *testing.T, s string) {
		sub, err := resolve(pol, "subject", s)
		_, id, _ := strings.Cut(s, ":")
		var e *apiError
		switch {
		case err != nil && (!errors.As(err, &e) || e.Status != http.StatusBadRequest && e.Status != http.StatusNotFound):
			t.Fatalf("%q: got %v, want a 400 or a 404", s, err)
		case (s == "fuzz-secret" || id == "fuzz-secret") && (err == nil || strings.Contains(e.Message, "fuzz-secret")):
			t.Fatalf("%q: a key's secret is accepted or repeated: %+v, %v", s, sub, err)
		case err == nil && sub.ID != s && !(strings.HasPrefix(s, "ip:") && strings.HasPrefix(sub.ID, "ip:")) &&
			!(strings.HasPrefix(s, "user:") && sub.ID == "user:"+limiter.CanonicalUser(id)): // user ids fold to lower case
			t.Fatalf("%q: resolved to %+v", s, sub)
		}
	})
}

// TestSpikeRule: what the spike rule finds, and what it leaves alone.
func TestSpikeRule(t *testing.T) {
	points := func(n int) []point {
		p := make([]point, n)
		for i := range p {
			p[i].At = fuzzNow.Add(time.Duration(i) * time.Hour)
		}
		return p
	}
	series := func(baseline, values []int64) map[int]*tally {
		m := map[int]*tally{}
		for i, v := range append(baseline, values...) {
			m[i-len(baseline)] = &tally{Total: v, RateLimited: v}
		}
		return m
	}
	ten := func(v int64) []int64 {
		b := make([]int64, spikeWindow)
		for i := range b {
			b[i] = v
		}
		return b
	}
	for _, tc := range []struct {
		name     string
		baseline []int64
		values   []int64
		want     []int // indexes of the spikes
	}{
		{"steady", ten(100), []int64{100, 100, 100}, nil},
		{"steady, small rise", ten(100), []int64{150, 199}, nil},
		{"steady, doubled", ten(100), []int64{200}, []int{0}},
		{"noisy", []int64{90, 110, 95, 105, 100, 98, 102, 97, 103, 100}, []int64{108, 92, 111}, nil},
		{"burst", []int64{90, 110, 95, 105, 100, 98, 102, 97, 103, 100}, []int64{100, 400, 100}, []int{1}},
		{"quiet, below the floor", ten(0), []int64{9, 0, 3}, nil},
		{"quiet, at the floor", ten(0), []int64{10}, []int{0}},
		{"wide baseline", []int64{0, 100, 0, 100, 0, 100, 0, 100, 0, 100}, []int64{180}, nil},
		{"after a burst", ten(5), []int64{500, 5, 5, 5}, []int{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			found := spikes("g", series(tc.baseline, tc.values), points(len(tc.values)))
			var got []int
			for _, s := range found {
				if s.Metric == "requests" { // the same values as "limited" here
					got = append(got, int(s.At.Sub(fuzzNow)/time.Hour))
				}
			}
			if len(found) != 2*len(got) || len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0]) {
				t.Errorf("spikes at %v (%d found), want %v", got, len(found), tc.want)
			}
		})
	}
}
