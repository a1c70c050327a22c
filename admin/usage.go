package admin

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
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

// usageCursor is a position in the usage list: the ordering key of the
// last subject of a page. Alone, it continues the live ranking after
// that position.
type usageCursor struct {
	Fullest float64 `json:"f"`
	Subject string  `json:"s"`
}

// pageCursor is where a page of the usage list ends: its ranking (see
// usageRanking) and how many of its subjects the pages so far listed,
// and the position of the last one, which continues the live ranking
// once the ranking is gone.
type pageCursor struct {
	Ranking string `json:"r,omitempty"`
	Offset  int    `json:"n,omitempty"`
	usageCursor
}

func (c pageCursor) String() string {
	b, _ := json.Marshal(c) // floats of a ranking, strings and ints always encode
	return base64.RawURLEncoding.EncodeToString(b)
}

// parseUsageCursor reads a cursor of the usage list; "" is the start.
func parseUsageCursor(s string) (*pageCursor, error) {
	if s == "" {
		return nil, nil
	}
	var c pageCursor
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, &c) != nil || c.Subject == "" || c.Offset < 0 {
		return nil, badRequest("cursor: not a cursor this endpoint returned")
	}
	return &c, nil
}

// rankUsage lists the subjects using the most of a quota (used/limit of
// their fullest one), highest first, then by subject, limit per page,
// after the cursor.
//
// The first page ranks every subject that has a counter of a current
// period in the ledger, each read from the hot path, which has the exact
// numbers, and keeps that ranking (see usageRanking): the next pages
// list the rest of it, so traffic between pages neither skips nor
// repeats a subject. Each page reads its subjects' usage when it is
// served. A cursor whose ranking is gone (older than usageRankingTTL, or
// from another replica) ranks again and continues after its position.
func (s *Server) rankUsage(ctx context.Context, pol *limiter.Policy, limit int, after *pageCursor) (usageList, error) {
	list := usageList{Subjects: []usageView{}}
	now := s.now()
	rk, from := (*usageRanking)(nil), 0
	if after != nil {
		if rk = s.rankings.get(after.Ranking, now); rk != nil {
			from = min(after.Offset, len(rk.subjects))
		}
	}
	var (
		views []usageView
		to    int // the ranked subjects this page and those before it consumed
		total int // subjects in the ranking
	)
	if rk != nil {
		// The page consumes limit ranked subjects whether or not they
		// still resolve: one the policy no longer knows is left out, and
		// the page is shorter, but the walk moves on past it.
		to = min(from+limit, len(rk.subjects))
		v, err := s.readUsage(ctx, pol, rk.subjects[from:to])
		if err != nil {
			return usageList{}, err
		}
		views, total = v, len(rk.subjects)
	} else {
		ranked, err := s.rankAll(ctx, pol, now)
		if err != nil {
			return usageList{}, err
		}
		if c := after; c != nil {
			from = len(ranked)
			if i := slices.IndexFunc(ranked, func(v usageView) bool {
				return v.fullest < c.Fullest || v.fullest == c.Fullest && v.Subject > c.Subject
			}); i >= 0 {
				from = i
			}
		}
		to, total = min(from+limit, len(ranked)), len(ranked)
		views = ranked[from:to]
		if to < total { // kept only when a page follows
			rk = s.rankings.put(ranked, now)
		}
	}
	if to < total {
		last := rk.subjects[to-1]
		list.NextCursor = pageCursor{rk.id, to, usageCursor{last.fullest, last.id}}.String()
	}
	list.Subjects = append(list.Subjects, views...)
	return list, nil
}

// rankAll reads from the hot path every subject with a counter of one of
// its own quotas' current periods in the ledger, and returns them ranked:
// the fullest quota first, then by subject.
func (s *Server) rankAll(ctx context.Context, pol *limiter.Policy, now time.Time) ([]usageView, error) {
	starts := periodStarts(pol.Config(), now)
	if len(starts) == 0 {
		return nil, nil // no quotas, nothing to rank
	}
	sctx, cancel := storeContext(ctx, scanTime)
	values, err := s.store.PeriodUsage(sctx, starts)
	cancel()
	if err != nil {
		return nil, storeError(sctx, "reading the usage ledger", err)
	}
	type counter struct {
		key   string
		start int64
	}
	current := make(map[counter]bool, len(values))
	var ids []string
	seen := map[string]bool{}
	for _, v := range values {
		current[counter{v.Key, v.Start.Unix()}] = true
		if id, ok := pol.CounterSubject(v.Key); ok && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	// Only counters of the subject's own quotas in their current periods
	// count: a day that started with the month, or a route's quota, is
	// no reason to list a subject.
	var subs []limiter.Subject
	var limits []limiter.Limit
	for _, id := range ids {
		sub, err := resolve(pol, "subject", id)
		if err != nil {
			continue // the global counter, or a key no longer configured
		}
		limits = pol.Limits(limits[:0], sub, nil, now)
		if slices.ContainsFunc(limits, func(l limiter.Limit) bool {
			if l.Period == nil {
				return false
			}
			start, _ := l.Period.Bounds(now)
			return current[counter{l.Key, start.Unix()}]
		}) {
			subs = append(subs, sub)
		}
	}
	views, err := s.readSubjects(ctx, pol, subs)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(views, func(a, b usageView) int {
		return cmp.Or(cmp.Compare(b.fullest, a.fullest), strings.Compare(a.Subject, b.Subject))
	})
	return views, nil
}

// readUsage reads the usage of the ranked subjects of a page, in order;
// a subject the policy no longer knows is left out.
func (s *Server) readUsage(ctx context.Context, pol *limiter.Policy, ranked []rankedSubject) ([]usageView, error) {
	subs := make([]limiter.Subject, 0, len(ranked))
	for _, r := range ranked {
		if sub, err := resolve(pol, "subject", r.id); err == nil {
			subs = append(subs, sub)
		}
	}
	return s.readSubjects(ctx, pol, subs)
}

// readSubjects reads subs from the hot path side by side: a hot path on
// Redis answers concurrent reads in shared round trips, where one after
// the other each would wait for its own.
func (s *Server) readSubjects(ctx context.Context, pol *limiter.Policy, subs []limiter.Subject) ([]usageView, error) {
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
		return nil, err
	}
	return views, nil
}

// periodStarts returns the start of the current period of every quota
// cfg defines, each once: where the ledger keeps the counters the usage
// list ranks.
func periodStarts(cfg limiter.PolicyConfig, now time.Time) []time.Time {
	var starts []time.Time
	add := func(l limiter.Limits) {
		for _, sp := range l.Quota {
			start, _ := sp.Period.Bounds(now)
			if !slices.ContainsFunc(starts, start.Equal) {
				starts = append(starts, start)
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
	return starts
}

// Rankings of the usage list are kept usageRankingTTL after they were
// taken, and at most usageRankingsMax subjects in all (about 64 bytes
// each plus the subject's name): past it, the oldest rankings go first,
// and their cursors rank again (see rankUsage). The newest one is always
// kept.
var (
	usageRankingTTL  = 5 * time.Minute
	usageRankingsMax = 1 << 20
)

// rankedSubject is a subject of a ranking and its ordering key.
type rankedSubject struct {
	id      string
	fullest float64
}

// usageRanking is the order of the usage list when its first page was
// served.
type usageRanking struct {
	id       string // random: a cursor of another replica finds none
	taken    time.Time
	subjects []rankedSubject
}

// usageRankings keeps the recent rankings of the usage list. The zero
// value is empty and ready to use.
type usageRankings struct {
	mu   sync.Mutex
	list []*usageRanking // oldest first
	size int             // subjects in list
}

// put keeps the ranking of views, taken at now, and returns it.
func (rs *usageRankings) put(views []usageView, now time.Time) *usageRanking {
	rk := &usageRanking{id: rand.Text(), taken: now, subjects: make([]rankedSubject, len(views))}
	for i, v := range views {
		rk.subjects[i] = rankedSubject{v.Subject, v.fullest}
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.list = append(rs.list, rk)
	rs.size += len(rk.subjects)
	drop := 0
	for _, old := range rs.list[:len(rs.list)-1] {
		if now.Sub(old.taken) < usageRankingTTL && rs.size <= usageRankingsMax {
			break
		}
		rs.size -= len(old.subjects)
		drop++
	}
	rs.list = slices.Delete(rs.list, 0, drop)
	return rk
}

// get returns the ranking id names, or nil if it is gone or older than
// usageRankingTTL.
func (rs *usageRankings) get(id string, now time.Time) *usageRanking {
	if id == "" {
		return nil
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, rk := range rs.list {
		if rk.id == id && now.Sub(rk.taken) < usageRankingTTL {
			return rk
		}
	}
	return nil
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
