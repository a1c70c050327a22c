package admin

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"golang.org/x/sync/errgroup"
)

// usageView is one subject's usage, read from the hot path.
type usageView struct {
	Subject string `json:"subject"`
	User    string `json:"user"`
	Plan    string `json:"plan"`
	// Reputation is 100, the starting score, until the reputation
	// system (SPEC §7) exists.
	Reputation int          `json:"reputation"`
	Rate       []rateUsage  `json:"rate"`
	Quota      []quotaUsage `json:"quota"`

	fullest float64 // used/limit of its fullest quota, for ordering
}

type rateUsage struct {
	Name         string `json:"name"`
	Limit        int64  `json:"limit"`
	Window       string `json:"window"`
	Used         int64  `json:"used"`
	Remaining    int64  `json:"remaining"`
	ResetSeconds int64  `json:"reset_seconds"`
	Shadow       bool   `json:"shadow,omitempty"`
}

type quotaUsage struct {
	Name         string    `json:"name"`
	Limit        int64     `json:"limit"`
	Period       string    `json:"period"`
	Used         int64     `json:"used"`
	Remaining    int64     `json:"remaining"`
	ResetSeconds int64     `json:"reset_seconds"`
	PeriodStart  time.Time `json:"period_start"`
	Shadow       bool      `json:"shadow,omitempty"`
}

// usageList is the body of GET /api/admin/quotas/usage without subject.
type usageList struct {
	Subjects   []usageView `json:"subjects"`
	NextCursor string      `json:"next_cursor"` // "" after the last page
}

// maxCandidates bounds the ledger counters the usage list ranks.
const maxCandidates = 1000

// usageReaders is how many subjects the usage list reads from the hot
// path at once.
var usageReaders = 32

// getUsage answers GET /api/admin/quotas/usage[?subject=S]: one
// subject's usage, or a page of the subjects using the most of a quota.
func (s *Server) getUsage(w http.ResponseWriter, r *http.Request) error {
	p, err := newParams(r.URL.Query(), "subject", "limit", "cursor")
	if err != nil {
		return err
	}
	pol, err := s.needPolicy()
	if err != nil {
		return err
	}
	if s.lim == nil {
		return unavailable("the rate limiter")
	}
	if id := p.str("subject"); id != "" {
		sub, err := resolve(pol, "subject", id)
		if err != nil {
			return err
		}
		v, err := s.usageOf(r.Context(), pol, sub)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, v)
		return nil
	}
	limit, err := p.integer("limit", 50, 1, 1000)
	if err != nil {
		return err
	}
	after, err := parseUsageCursor(p.str("cursor"))
	if err != nil {
		return err
	}
	if err := s.needStore(); err != nil {
		return err
	}
	list, err := s.rankUsage(r.Context(), pol, limit, after)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

// usageOf reads the usage of sub's own limits (those of no route) from
// the hot path, with a decision of cost 0: nothing is charged.
func (s *Server) usageOf(ctx context.Context, pol *limiter.Policy, sub limiter.Subject) (usageView, error) {
	d, err := s.lim.Decide(ctx, pol.Limits(nil, sub, nil, s.now()), 0)
	if err != nil {
		return usageView{}, limiterDown(err)
	}
	v := usageView{Subject: sub.ID, User: sub.User, Plan: sub.Plan, Reputation: 100, Rate: []rateUsage{}, Quota: []quotaUsage{}}
	for _, st := range d.Statuses {
		l := st.Limit
		if l.Period == nil {
			v.Rate = append(v.Rate, rateUsage{Name: l.Name, Limit: l.Limit, Window: limiter.FormatWindow(l.Window),
				Used: st.Used, Remaining: st.Remaining, ResetSeconds: seconds(st.Reset), Shadow: l.Shadow})
			continue
		}
		v.Quota = append(v.Quota, quotaUsage{Name: l.Name, Limit: l.Limit, Period: l.Period.String(),
			Used: st.Used, Remaining: st.Remaining, ResetSeconds: seconds(st.Reset), PeriodStart: st.Counter.Start.UTC(), Shadow: l.Shadow})
		v.fullest = max(v.fullest, float64(st.Used)/float64(l.Limit))
	}
	return v, nil
}

// limiterDown is the 503 of a hot path that cannot answer.
func limiterDown(err error) error {
	return &apiError{Status: http.StatusServiceUnavailable, Code: "limiter_unavailable",
		Message: "the rate limiter cannot answer right now", Err: err}
}

// seconds rounds d up to whole seconds.
func seconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

// usageCursor is where a page of the usage list ends: the ordering key
// of its last subject.
type usageCursor struct {
	Fullest float64 `json:"f"`
	Subject string  `json:"s"`
}

func (c usageCursor) String() string {
	b, _ := json.Marshal(c) // a float and a string always encode
	return base64.RawURLEncoding.EncodeToString(b)
}

// parseUsageCursor reads a cursor of the usage list; "" is the start.
func parseUsageCursor(s string) (*usageCursor, error) {
	if s == "" {
		return nil, nil
	}
	var c usageCursor
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, &c) != nil || c.Subject == "" {
		return nil, badRequest("cursor: not a cursor this endpoint returned")
	}
	return &c, nil
}

// rankUsage lists the subjects using the most of a quota (used/limit of
// their fullest one), highest first, then by subject, limit per page,
// after the cursor. The candidates are the subjects of the ledger's most
// used quota counters in the current periods; each is then read from the
// hot path, which has the exact numbers.
func (s *Server) rankUsage(ctx context.Context, pol *limiter.Policy, limit int, after *usageCursor) (usageList, error) {
	list := usageList{Subjects: []usageView{}}
	since, ok := periodsStart(pol.Config(), s.now())
	if !ok {
		return list, nil // no quotas, nothing to rank
	}
	values, err := s.store.TopUsage(ctx, since, maxCandidates)
	if err != nil {
		return usageList{}, internal("reading the usage ledger", err)
	}
	seen := map[string]bool{}
	var subs []limiter.Subject
	for _, v := range values {
		id, ok := pol.CounterSubject(v.Key)
		if !ok || seen[id] {
			continue
		}
		seen[id] = true
		sub, err := resolve(pol, "subject", id)
		if err != nil {
			continue // the global counter, or a key no longer configured
		}
		subs = append(subs, sub)
	}
	// Read them side by side: a hot path on Redis answers concurrent
	// reads in shared round trips, where one after the other each would
	// wait for its own.
	views := make([]usageView, len(subs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(usageReaders)
	for i, sub := range subs {
		g.Go(func() (err error) {
			views[i], err = s.usageOf(gctx, pol, sub)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return usageList{}, err
	}
	slices.SortFunc(views, func(a, b usageView) int {
		return cmp.Or(cmp.Compare(b.fullest, a.fullest), strings.Compare(a.Subject, b.Subject))
	})
	if c := after; c != nil {
		i := slices.IndexFunc(views, func(v usageView) bool {
			return v.fullest < c.Fullest || v.fullest == c.Fullest && v.Subject > c.Subject
		})
		if i < 0 {
			i = len(views)
		}
		views = views[i:]
	}
	if len(views) > limit {
		views = views[:limit]
		last := views[limit-1]
		list.NextCursor = usageCursor{last.fullest, last.Subject}.String()
	}
	list.Subjects = append(list.Subjects, views...)
	return list, nil
}

// periodsStart returns the earliest start of the current periods of
// every quota cfg defines, so that TopUsage since then sees every
// current counter; false when there are no quotas.
func periodsStart(cfg limiter.PolicyConfig, now time.Time) (time.Time, bool) {
	var since time.Time
	add := func(l limiter.Limits) {
		for _, sp := range l.Quota {
			if start, _ := sp.Period.Bounds(now); since.IsZero() || start.Before(since) {
				since = start
			}
		}
	}
	for _, p := range cfg.Plans {
		add(p.Limits)
	}
	for _, u := range cfg.Users {
		add(u.Limits)
	}
	for _, k := range cfg.Keys {
		add(k.Limits)
	}
	for _, r := range cfg.Routes {
		add(r.Limits)
	}
	for _, r := range cfg.Rules {
		add(r.Limits)
	}
	return since, !since.IsZero()
}

// resetBody is the body of POST /api/admin/quotas/reset.
type resetBody struct {
	Subject string `json:"subject"`
}

// resetUsage answers POST /api/admin/quotas/reset: it clears the rate
// windows and quota usage of a subject, its own limits and every route's
// (in the hot path and in the ledger), records it in the audit log, and
// answers the usage after the reset. Limits of a shared scope go with
// it: resetting a key resets its user's quotas, which all the user's keys
// share. Global limits, shared by every caller, are left alone.
func (s *Server) resetUsage(w http.ResponseWriter, r *http.Request) error {
	pol, err := s.needPolicy()
	if err != nil {
		return err
	}
	if s.lim == nil {
		return unavailable("the rate limiter")
	}
	if err := s.needStore(); err != nil {
		return err
	}
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var b resetBody
	if err := decodeObject(body, &b, ""); err != nil {
		return err
	}
	sub, err := resolve(pol, "subject", b.Subject)
	if err != nil {
		return err
	}
	limits := resetLimits(pol, sub, s.now())
	if err := s.lim.Reset(r.Context(), limits); err != nil {
		return limiterDown(err)
	}
	names := make([]string, len(limits))
	for i, l := range limits {
		names[i] = l.Name
	}
	s.audit(r, "quota.reset", sub.ID, map[string]any{"limits": names})
	v, err := s.usageOf(r.Context(), pol, sub)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// resetLimits returns the limits of sub on no route and on every
// limited route, each counter once, global ones left out.
func resetLimits(pol *limiter.Policy, sub limiter.Subject, now time.Time) []limiter.Limit {
	all := pol.Limits(nil, sub, nil, now)
	for _, rt := range pol.Config().Routes {
		if !rt.Exempt {
			all = pol.Limits(all, sub, &rt, now)
		}
	}
	var limits []limiter.Limit
	seen := map[string]bool{}
	for _, l := range all {
		if !seen[l.Key] && !strings.HasPrefix(l.Key, "{global}") {
			limits = append(limits, l)
		}
		seen[l.Key] = true
	}
	return limits
}
