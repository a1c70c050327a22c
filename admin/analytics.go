package admin

import (
	"cmp"
	"encoding/csv"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

// Analytics limits and the spike rule.
const (
	// maxBuckets is the most buckets one analytics query may span.
	maxBuckets = 10000
	// maxTopSubjects is the length of the top subjects list.
	maxTopSubjects = 10
	// A bucket is a spike when its count exceeds the mean of the
	// spikeWindow buckets before it by more than spikeSigmas standard
	// deviations of theirs, by at least spikeFloor, and is at least
	// twice that mean. The floor keeps quiet series (a few requests
	// against none) from spiking; the doubling keeps a perfectly steady
	// series (deviation 0) from spiking on a small rise.
	spikeWindow = 10
	spikeSigmas = 3
	spikeFloor  = 10
)

// bucketSizes are the bucket widths of the analytics endpoint.
var bucketSizes = map[string]time.Duration{"1m": time.Minute, "1h": time.Hour, "1d": 24 * time.Hour}

// analyticsQuery is a parsed GET /api/admin/quotas/analytics.
type analyticsQuery struct {
	From, To   time.Time // whole buckets, in UTC
	BucketName string
	Bucket     time.Duration
	GroupBy    string // subject, route or user
	CSV        bool
}

// parseAnalyticsQuery reads the parameters of the analytics endpoint.
// From is rounded down and To up to whole buckets of UTC time (days
// start at UTC midnight); To defaults to now and From to To - 24h.
func parseAnalyticsQuery(p params, now time.Time) (analyticsQuery, error) {
	var q analyticsQuery
	var err error
	if q.BucketName, err = p.oneOf("bucket", "1h", "1m", "1h", "1d"); err != nil {
		return q, err
	}
	q.Bucket = bucketSizes[q.BucketName]
	if q.GroupBy, err = p.oneOf("group_by", "subject", "subject", "route", "user"); err != nil {
		return q, err
	}
	format, err := p.oneOf("format", "json", "json", "csv")
	if err != nil {
		return q, err
	}
	q.CSV = format == "csv"
	if q.To, err = p.time("to", now.UTC()); err != nil {
		return q, err
	}
	if q.From, err = p.time("from", q.To.Add(-24*time.Hour)); err != nil {
		return q, err
	}
	if !q.From.Before(q.To) {
		return q, badRequest("from: must be before to")
	}
	q.From = q.From.Truncate(q.Bucket)
	if t := q.To.Truncate(q.Bucket); t.Before(q.To) {
		q.To = t.Add(q.Bucket)
	}
	if n := q.To.Sub(q.From) / q.Bucket; n > maxBuckets {
		return q, badRequest("from, to: the range holds more than %d buckets of %s: choose a larger bucket or a shorter range", maxBuckets, q.BucketName)
	}
	return q, nil
}

// tally counts requests by outcome.
type tally struct {
	Allowed       int64 `json:"allowed"`
	RateLimited   int64 `json:"rate_limited"`
	QuotaExceeded int64 `json:"quota_exceeded"`
	Total         int64 `json:"total"`
}

func (c *tally) add(r *quota.Rollup) {
	c.Allowed += r.Allowed
	c.RateLimited += r.RateLimited
	c.QuotaExceeded += r.QuotaExceeded
	c.Total += r.Allowed + r.RateLimited + r.QuotaExceeded
}

func (c *tally) limited() int64 { return c.RateLimited + c.QuotaExceeded }

// point is the counts of one bucket, starting At.
type point struct {
	At time.Time `json:"at"`
	tally
}

// series is one group's counts: its totals over the range and its
// non-empty buckets (a bucket missing from Points counted nothing).
type series struct {
	Group  string  `json:"group"`
	Totals tally   `json:"totals"`
	Points []point `json:"points"`
}

type subjectTotals struct {
	Subject string `json:"subject"`
	tally
	Limited int64 `json:"limited"`
}

// trend compares the range with the previous range of equal length.
// ChangePct is the change of each count in percent, null when the
// previous count was zero.
type trend struct {
	From      time.Time `json:"from"`
	To        time.Time `json:"to"`
	Totals    tally     `json:"totals"`
	ChangePct struct {
		Allowed       *float64 `json:"allowed"`
		RateLimited   *float64 `json:"rate_limited"`
		QuotaExceeded *float64 `json:"quota_exceeded"`
		Total         *float64 `json:"total"`
	} `json:"change_pct"`
}

// spike is a bucket far above its recent baseline (see spikeSigmas).
// Group "*" is all groups together; Metric is "requests" (every
// outcome) or "limited" (rate_limited and quota_exceeded).
type spike struct {
	Group          string    `json:"group"`
	At             time.Time `json:"at"`
	Metric         string    `json:"metric"`
	Value          int64     `json:"value"`
	BaselineMean   float64   `json:"baseline_mean"`
	BaselineStddev float64   `json:"baseline_stddev"`
}

// analyticsView is the body of GET /api/admin/quotas/analytics.
type analyticsView struct {
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	Bucket  string    `json:"bucket"`
	GroupBy string    `json:"group_by"`
	Totals  tally     `json:"totals"`
	// Points has every bucket of the range, all groups together.
	Points      []point         `json:"points"`
	Series      []series        `json:"series"`
	TopSubjects []subjectTotals `json:"top_subjects"`
	Trend       trend           `json:"trend"`
	Spikes      []spike         `json:"spikes"`
}

// lookback is where the roll-ups analyze needs start: the previous
// range for the trend, and spikeWindow buckets of baseline.
func (q analyticsQuery) lookback() time.Time {
	return minTime(q.From.Add(-q.To.Sub(q.From)), q.From.Add(-spikeWindow*q.Bucket))
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// group returns the group of r: its subject, its route ("" for no
// route), or its user ("user:<id>"; a subject without a user counts
// alone, as in a user-scoped limit).
func (q analyticsQuery) group(r *quota.Rollup) string {
	switch q.GroupBy {
	case "route":
		return r.Route
	case "user":
		if r.User != "" {
			return "user:" + r.User
		}
	}
	return r.Subject
}

// analyze computes the analytics of q from roll-ups of [q.lookback(),
// q.To).
func analyze(rs []quota.Rollup, q analyticsQuery) analyticsView {
	n := int(q.To.Sub(q.From) / q.Bucket)
	v := analyticsView{From: q.From, To: q.To, Bucket: q.BucketName, GroupBy: q.GroupBy,
		Points: make([]point, n), Series: []series{}, TopSubjects: []subjectTotals{}, Spikes: []spike{}}
	v.Trend.From, v.Trend.To = q.From.Add(-q.To.Sub(q.From)), q.From
	for i := range v.Points {
		v.Points[i].At = q.From.Add(time.Duration(i) * q.Bucket)
	}
	// Buckets are indexed from q.From; the baseline has negative indexes.
	type group struct {
		totals  tally
		buckets map[int]*tally
	}
	groups := map[string]*group{}
	all := &group{buckets: map[int]*tally{}}
	subjects := map[string]*tally{}
	for i := range rs {
		r := &rs[i]
		if !r.Minute.Before(v.Trend.From) && r.Minute.Before(q.From) {
			v.Trend.Totals.add(r)
		}
		d := r.Minute.Sub(q.From)
		b := int(d / q.Bucket)
		if d < 0 {
			b = -int((-d + q.Bucket - 1) / q.Bucket) // round down
		}
		if b < -spikeWindow || b >= n {
			continue
		}
		name := q.group(r)
		g := groups[name]
		if g == nil {
			g = &group{buckets: map[int]*tally{}}
			groups[name] = g
		}
		for _, into := range []*group{g, all} {
			c := into.buckets[b]
			if c == nil {
				c = &tally{}
				into.buckets[b] = c
			}
			c.add(r)
		}
		if b < 0 {
			continue
		}
		g.totals.add(r)
		v.Totals.add(r)
		v.Points[b].tally.add(r)
		if subjects[r.Subject] == nil {
			subjects[r.Subject] = &tally{}
		}
		subjects[r.Subject].add(r)
	}

	for name, g := range groups {
		if g.totals.Total == 0 {
			continue // only in the baseline
		}
		s := series{Group: name, Totals: g.totals}
		for b, c := range g.buckets {
			if b >= 0 {
				s.Points = append(s.Points, point{At: v.Points[b].At, tally: *c})
			}
		}
		slices.SortFunc(s.Points, func(a, b point) int { return a.At.Compare(b.At) })
		v.Series = append(v.Series, s)
		v.Spikes = append(v.Spikes, spikes(name, g.buckets, v.Points)...)
	}
	v.Spikes = append(v.Spikes, spikes("*", all.buckets, v.Points)...)
	slices.SortFunc(v.Series, func(a, b series) int {
		return cmp.Or(cmp.Compare(b.Totals.Total, a.Totals.Total), strings.Compare(a.Group, b.Group))
	})
	slices.SortFunc(v.Spikes, func(a, b spike) int {
		return cmp.Or(a.At.Compare(b.At), strings.Compare(a.Group, b.Group), strings.Compare(a.Metric, b.Metric))
	})

	for name, c := range subjects {
		v.TopSubjects = append(v.TopSubjects, subjectTotals{Subject: name, tally: *c, Limited: c.limited()})
	}
	slices.SortFunc(v.TopSubjects, func(a, b subjectTotals) int {
		return cmp.Or(cmp.Compare(b.Limited, a.Limited), cmp.Compare(b.Total, a.Total), strings.Compare(a.Subject, b.Subject))
	})
	v.TopSubjects = v.TopSubjects[:min(len(v.TopSubjects), maxTopSubjects)]

	cur, prev := &v.Totals, &v.Trend.Totals
	pct := &v.Trend.ChangePct
	pct.Allowed, pct.RateLimited = change(cur.Allowed, prev.Allowed), change(cur.RateLimited, prev.RateLimited)
	pct.QuotaExceeded, pct.Total = change(cur.QuotaExceeded, prev.QuotaExceeded), change(cur.Total, prev.Total)
	return v
}

// change is the change from prev to cur in percent, to 0.1; nil when
// prev is zero.
func change(cur, prev int64) *float64 {
	if prev == 0 {
		return nil
	}
	c := math.Round(float64(cur-prev)/float64(prev)*1000) / 10
	return &c
}

// spikes finds the spikes of one group's buckets (indexed from the
// range's first, the baseline before it) in the buckets of points.
func spikes(name string, buckets map[int]*tally, points []point) []spike {
	var found []spike
	vals := make([]float64, spikeWindow+len(points))
	for _, metric := range []struct {
		name string
		of   func(*tally) int64
	}{{"requests", func(c *tally) int64 { return c.Total }}, {"limited", (*tally).limited}} {
		clear(vals)
		for b, c := range buckets {
			vals[b+spikeWindow] = float64(metric.of(c))
		}
		var sum, sumSq float64 // of the spikeWindow values before i
		for i := 0; i < spikeWindow; i++ {
			sum, sumSq = sum+vals[i], sumSq+vals[i]*vals[i]
		}
		for i := spikeWindow; i < len(vals); i++ {
			mean := sum / spikeWindow
			sd := math.Sqrt(max(sumSq/spikeWindow-mean*mean, 0))
			if x := vals[i]; x-mean > spikeSigmas*sd && x-mean >= spikeFloor && x >= 2*mean {
				found = append(found, spike{Group: name, At: points[i-spikeWindow].At, Metric: metric.name,
					Value: int64(x), BaselineMean: math.Round(mean*100) / 100, BaselineStddev: math.Round(sd*100) / 100})
			}
			old := vals[i-spikeWindow]
			sum, sumSq = sum+vals[i]-old, sumSq+vals[i]*vals[i]-old*old
		}
	}
	return found
}

// getAnalytics answers GET /api/admin/quotas/analytics, in JSON or, with
// format=csv, as a CSV report: one row per bucket and group that counted
// requests.
func (s *Server) getAnalytics(w http.ResponseWriter, r *http.Request) error {
	p, err := newParams(r.URL.Query(), "from", "to", "bucket", "group_by", "format")
	if err != nil {
		return err
	}
	q, err := parseAnalyticsQuery(p, s.now())
	if err != nil {
		return err
	}
	if err := s.needStore(); err != nil {
		return err
	}
	ctx, cancel := storeContext(r.Context(), scanTime)
	defer cancel()
	rs, err := s.store.Rollups(ctx, q.lookback(), q.To)
	if err != nil {
		return storeError(ctx, "reading roll-ups", err)
	}
	v := analyze(rs, q)
	if !q.CSV {
		writeJSON(w, http.StatusOK, v)
		return nil
	}
	const stamp = "20060102T1504Z"
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="gaia-analytics-%s-%s-%s.csv"`,
		q.GroupBy, q.From.Format(stamp), q.To.Format(stamp)))
	cw := csv.NewWriter(w)
	cw.Write([]string{"bucket_start", q.GroupBy, "allowed", "rate_limited", "quota_exceeded", "total"})
	type row struct {
		group string
		point
	}
	var rows []row
	for _, s := range v.Series {
		for _, pt := range s.Points {
			rows = append(rows, row{s.Group, pt})
		}
	}
	slices.SortFunc(rows, func(a, b row) int { return cmp.Or(a.At.Compare(b.At), strings.Compare(a.group, b.group)) })
	itoa := func(n int64) string { return strconv.FormatInt(n, 10) }
	for _, rw := range rows {
		cw.Write([]string{rw.At.Format(time.RFC3339), csvCell(rw.group), itoa(rw.Allowed), itoa(rw.RateLimited), itoa(rw.QuotaExceeded), itoa(rw.Total)})
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		s.logf("admin: analytics CSV: %v", err) // the status is sent: too late to answer an error
	}
	return nil
}

// csvCell keeps a value from being read as a formula by a spreadsheet
// (OWASP CSV injection): a leading =, +, -, @, tab or CR gets a quote.
func csvCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
