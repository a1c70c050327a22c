// Package storetest is the contract every limiter.Store passes: the
// in-process limiter/memstore always, limiter/redisstore when a Redis is
// at hand. Run drives a store with a fake Clock through the behaviour
// documented on limiter.Store and limiter.Status, and through a property
// test of the sliding-window guarantee (SPEC §4): in any interval of
// length Window at most Limit is admitted, and under saturating demand
// at least 95% of Limit is admitted per Window.
package storetest

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// Run runs the contract tests as subtests of t, in parallel. newStore
// returns an empty store, or one that shares no key with other tests,
// reading time from clock.Now. Each subtest makes its own store and its
// own Clock, starting at Start; the clock moves by whole microseconds.
// Keys start with a hash tag holding t.Name() and a per-run nonce, so a
// shared Redis (or Redis Cluster) is safe and needs no flushing.
func Run(t *testing.T, newStore func(t *testing.T, clock *Clock) limiter.Store) {
	RunWith(t, Options{}, newStore)
}

// Options tune Run for slower backends.
type Options struct {
	// Scale shortens the property tests, which make about 270,000
	// decisions at scale 1, for a backend with a round trip per
	// decision: 0.3 makes about 90,000. Every decision is still checked
	// against the reference model, and utilisation is still measured
	// over at least 60 windows. Zero means 1.
	Scale float64
}

// RunWith is Run with options.
func RunWith(t *testing.T, o Options, newStore func(t *testing.T, clock *Clock) limiter.Store) {
	if o.Scale <= 0 {
		o.Scale = 1
	}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	tests := []struct {
		name string
		f    func(*env)
	}{
		{"SingleWindow", testSingleWindow},
		{"Sliding", testSliding},
		{"SeveralLimitsAtomic", testSeveralLimitsAtomic},
		{"Costs", testCosts},
		{"CostAboveLimit", testCostAboveLimit},
		{"PerRequest", testPerRequest},
		{"Shadow", testShadow},
		{"QuotaMissingSeedDecide", testQuotaMissing},
		{"SeedDoesNotOverwrite", testSeedDoesNotOverwrite},
		{"QuotaRollover", testQuotaRollover},
		{"QuotaRolloverZone", testQuotaRolloverZone},
		{"Refund", testRefund},
		{"Reset", testReset},
		{"StatusFields", testStatusFields},
		{"RetryAfterIsExact", testRetryAfterIsExact},
		{"Peek", testPeek},
		{"SharedCounter", testSharedCounter},
		{"Concurrent", testConcurrent},
		{"LargeCounts", testLargeCounts},
		{"PropertyAnyInterval", testPropertyAnyInterval},
		{"PropertyUtilisation", testPropertyUtilisation},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := NewClock(Start)
			tc.f(&env{
				T:     t,
				ctx:   t.Context(),
				store: newStore(t, clock),
				clock: clock,
				tag:   "{" + run + "/" + t.Name() + "}",
				scale: o.Scale,
			})
		})
	}
}

// env is one subtest's store, clock and key prefix.
type env struct {
	*testing.T
	ctx   context.Context
	store limiter.Store
	clock *Clock
	tag   string
	scale float64 // of the property tests' length; see Options
}

// rate returns a rate limit on the counter name.
func (e *env) rate(name string, limit int64, window time.Duration) limiter.Limit {
	return limiter.Limit{Name: name, Key: e.tag + name, Limit: limit, Window: window}
}

// quota returns a quota on the counter name.
func (e *env) quota(name string, limit int64, p limiter.Period) limiter.Limit {
	return limiter.Limit{Name: name, Key: e.tag + name, Limit: limit, Period: p}
}

// raw calls Decide and fails the test on error.
func (e *env) raw(limits []limiter.Limit, cost int64) limiter.Decision {
	e.Helper()
	d, err := e.store.Decide(e.ctx, limits, cost)
	if err != nil {
		e.Fatalf("Decide(%v, %d): %v", limits, cost, err)
	}
	if len(d.Statuses) != len(limits) {
		e.Fatalf("Decide returned %d statuses for %d limits", len(d.Statuses), len(limits))
	}
	return d
}

// decide calls Decide, seeding missing quota counters with zero usage
// first, as a Limiter without a ledger does.
func (e *env) decide(limits []limiter.Limit, cost int64) limiter.Decision {
	e.Helper()
	d := e.raw(limits, cost)
	if len(d.Missing) == 0 {
		return d
	}
	var values []limiter.CounterValue
	for _, i := range d.Missing {
		values = append(values, limiter.CounterValue{Counter: d.Statuses[i].Counter})
	}
	e.seed(values...)
	d = e.raw(limits, cost)
	if len(d.Missing) > 0 {
		e.Fatalf("Decide after Seed: still missing %v", d.Missing)
	}
	return d
}

func (e *env) seed(values ...limiter.CounterValue) {
	e.Helper()
	if err := e.store.Seed(e.ctx, values); err != nil {
		e.Fatalf("Seed: %v", err)
	}
}

// allow decides and fails the test unless the request was allowed.
func (e *env) allow(limits []limiter.Limit, cost int64) limiter.Decision {
	e.Helper()
	d := e.decide(limits, cost)
	if !d.Allowed {
		e.Fatalf("at +%v: cost %d refused, want allowed; statuses: %s", e.since(), cost, statuses(d))
	}
	return d
}

// refuse decides and fails the test unless the request was refused.
func (e *env) refuse(limits []limiter.Limit, cost int64) limiter.Decision {
	e.Helper()
	d := e.decide(limits, cost)
	if d.Allowed {
		e.Fatalf("at +%v: cost %d allowed, want refused; statuses: %s", e.since(), cost, statuses(d))
	}
	for i, s := range d.Statuses {
		if s.Charged {
			e.Errorf("refused request charged limit %d (%s)", i, s.Limit.Name)
		}
	}
	return d
}

func (e *env) since() time.Duration { return e.clock.Now().Sub(Start) }

// used peeks (cost 0) and returns the usage of every limit.
func (e *env) used(limits []limiter.Limit) []int64 {
	e.Helper()
	d := e.decide(limits, 0)
	u := make([]int64, len(d.Statuses))
	for i, s := range d.Statuses {
		if s.Charged {
			e.Errorf("peek charged limit %d (%s)", i, s.Limit.Name)
		}
		u[i] = s.Used
	}
	return u
}

func (e *env) wantUsed(limits []limiter.Limit, want ...int64) {
	e.Helper()
	if got := e.used(limits); !slices.Equal(got, want) {
		e.Errorf("at +%v: used = %v, want %v", e.since(), got, want)
	}
}

// within checks exact <= got <= exact+slack.
func (e *env) within(what string, got, exact, slack time.Duration) {
	e.Helper()
	if got < exact || got > exact+slack {
		e.Errorf("%s = %v, want within [%v, %v]", what, got, exact, exact+slack)
	}
}

func statuses(d limiter.Decision) string {
	s := ""
	for _, st := range d.Statuses {
		s += fmt.Sprintf("\n\t%s (%v): used=%d remaining=%d exceeded=%v charged=%v reset=%v retry=%v seq=%d",
			st.Limit.Name, st.Limit, st.Used, st.Remaining, st.Exceeded, st.Charged, st.Reset, st.RetryAfter, st.Seq)
	}
	return s
}

// hourly cuts time into UTC hours.
var hourly = quota.Calendar{Unit: quota.Hourly, Loc: time.UTC}

func testSingleWindow(e *env) {
	lim := []limiter.Limit{e.rate("r", 10, time.Second)}
	g := limiter.BucketWidth(time.Second)
	for i := int64(1); i <= 10; i++ {
		d := e.allow(lim, 1)
		s := d.Statuses[0]
		if !s.Charged || s.Exceeded || s.Used != i || s.Remaining != 10-i {
			e.Fatalf("request %d: charged=%v exceeded=%v used=%d remaining=%d, want true false %d %d",
				i, s.Charged, s.Exceeded, s.Used, s.Remaining, i, 10-i)
		}
		if d.Refused() != nil {
			e.Errorf("request %d: Refused() = %v, want nil", i, d.Refused())
		}
	}
	d := e.refuse(lim, 1)
	s := d.Statuses[0]
	if !s.Exceeded || s.Used != 10 || s.Remaining != 0 {
		e.Errorf("11th: exceeded=%v used=%d remaining=%d, want true 10 0", s.Exceeded, s.Used, s.Remaining)
	}
	if r := d.Refused(); r == nil || r.Limit.Name != "r" {
		e.Errorf("Refused() = %v, want limit r", r)
	}
	// All ten units were charged at Start: they leave the closed
	// interval [t-1s, t] just after Start+1s.
	e.within("RetryAfter", s.RetryAfter, time.Second, g)
	e.within("Reset", s.Reset, time.Second, g)

	e.clock.Advance(s.RetryAfter - time.Microsecond)
	e.refuse(lim, 1)
	e.clock.Advance(time.Microsecond)
	if d := e.allow(lim, 1); d.Statuses[0].Used != 1 {
		e.Errorf("after RetryAfter: used = %d, want 1", d.Statuses[0].Used)
	}
}

// testSliding checks that units leave one by one, not all at a boundary.
func testSliding(e *env) {
	lim := []limiter.Limit{e.rate("r", 10, time.Second)}
	for range 5 {
		e.allow(lim, 1)
	}
	e.clock.Advance(500 * time.Millisecond)
	for range 5 {
		e.allow(lim, 1)
	}
	e.refuse(lim, 1)
	// At +1.1s the first five have left, the last five have not.
	e.clock.Advance(600 * time.Millisecond)
	e.wantUsed(lim, 5)
	for range 5 {
		e.allow(lim, 1)
	}
	e.refuse(lim, 1)
	// A fixed window would allow another ten at +2s.
	e.clock.Set(Start.Add(2 * time.Second))
	e.wantUsed(lim, 5)
}

func testSeveralLimitsAtomic(e *env) {
	lim := []limiter.Limit{
		e.rate("short", 5, time.Second),
		e.rate("long", 8, 10*time.Second),
		e.quota("quota", 9, hourly),
	}
	for range 5 {
		e.allow(lim, 1)
	}
	d := e.refuse(lim, 1)
	if !d.Statuses[0].Exceeded || d.Statuses[1].Exceeded || d.Statuses[2].Exceeded {
		e.Errorf("exceeded = %v %v %v, want true false false",
			d.Statuses[0].Exceeded, d.Statuses[1].Exceeded, d.Statuses[2].Exceeded)
	}
	if r := d.Refused(); r == nil || r.Limit.Name != "short" {
		e.Errorf("Refused() = %v, want short", r)
	}
	e.wantUsed(lim, 5, 5, 5)

	// The short window frees; the long one has 3 left.
	e.clock.Advance(1100 * time.Millisecond)
	for range 3 {
		e.allow(lim, 1)
	}
	d = e.refuse(lim, 1)
	if r := d.Refused(); r == nil || r.Limit.Name != "long" {
		e.Errorf("Refused() = %v, want long", r)
	}
	e.wantUsed(lim, 3, 8, 8)

	// Both windows free; the quota has 1 left.
	e.clock.Advance(11 * time.Second)
	e.allow(lim, 1)
	d = e.refuse(lim, 1)
	if r := d.Refused(); r == nil || r.Limit.Name != "quota" {
		e.Errorf("Refused() = %v, want quota", r)
	}
	e.wantUsed(lim, 1, 1, 9)
	if d := e.decide(lim, 0); d.Statuses[2].Seq != 9 {
		e.Errorf("quota Seq = %d, want 9 (one per charge)", d.Statuses[2].Seq)
	}
}

func testCosts(e *env) {
	lim := []limiter.Limit{e.rate("r", 10, time.Second), e.quota("q", 100, hourly)}
	for i := int64(1); i <= 3; i++ {
		if d := e.allow(lim, 3); d.Statuses[0].Used != 3*i || d.Statuses[1].Used != 3*i {
			e.Errorf("after %d × cost 3: used = %d, %d, want %d", i, d.Statuses[0].Used, d.Statuses[1].Used, 3*i)
		}
	}
	d := e.refuse(lim, 3)
	e.within("RetryAfter", d.Statuses[0].RetryAfter, time.Second, limiter.BucketWidth(time.Second))
	e.allow(lim, 1)
	e.refuse(lim, 1)
	e.wantUsed(lim, 10, 10)
}

// testPerRequest checks that PerRequest limits (a route's own limits)
// charge 1 whatever the cost, while the others charge the cost.
func testPerRequest(e *env) {
	route := e.rate("route", 2, time.Second)
	route.PerRequest = true
	routeQuota := e.quota("route-quota", 3, hourly)
	routeQuota.PerRequest = true
	lim := []limiter.Limit{e.rate("r", 100, time.Second), route, routeQuota}
	e.allow(lim, 5)
	e.allow(lim, 5)
	d := e.refuse(lim, 5)
	if r := d.Refused(); r == nil || r.Limit.Name != "route" {
		e.Errorf("Refused() = %v, want route", r)
	}
	e.wantUsed(lim, 10, 2, 2)
	if d := e.decide(lim, 0); d.Statuses[1].Charged || d.Statuses[1].Used != 2 {
		e.Errorf("peek of a PerRequest limit: charged=%v used=%d, want false 2", d.Statuses[1].Charged, d.Statuses[1].Used)
	}
}

func testCostAboveLimit(e *env) {
	lim := []limiter.Limit{e.rate("r", 10, time.Second), e.quota("q", 5, hourly)}
	e.clock.Advance(15 * time.Minute)
	d := e.refuse(lim, 11)
	r, q := d.Statuses[0], d.Statuses[1]
	if !r.Exceeded || r.RetryAfter != time.Second {
		e.Errorf("rate: exceeded=%v RetryAfter=%v, want true 1s (the window: it never fits)", r.Exceeded, r.RetryAfter)
	}
	if !q.Exceeded || q.RetryAfter != 45*time.Minute {
		e.Errorf("quota: exceeded=%v RetryAfter=%v, want true 45m (the period end)", q.Exceeded, q.RetryAfter)
	}
	if r.Used != 0 || q.Used != 0 {
		e.Errorf("used = %d, %d, want 0, 0", r.Used, q.Used)
	}
	e.wantUsed(lim, 0, 0)
	d = e.allow(lim, 5)
	if d.Statuses[0].Used != 5 || d.Statuses[1].Used != 5 {
		e.Errorf("cost 5: used = %d, %d, want 5, 5", d.Statuses[0].Used, d.Statuses[1].Used)
	}
}

func testShadow(e *env) {
	enforced := e.rate("enforced", 10, time.Second)
	tight := e.rate("tight", 3, time.Second)
	tight.Shadow = true
	loose := e.rate("loose", 5, time.Second)
	loose.Shadow = true
	lim := []limiter.Limit{enforced, tight, loose}

	for range 3 {
		d := e.allow(lim, 1)
		for i, s := range d.Statuses {
			if !s.Charged || s.Exceeded {
				e.Errorf("limit %d: charged=%v exceeded=%v, want true false", i, s.Charged, s.Exceeded)
			}
		}
	}
	// "tight" would refuse: the request passes, the enforced limit is
	// charged, and no shadow limit is, "loose" included.
	d := e.allow(lim, 1)
	if got := d.ShadowLimited(); !slices.Equal(got, []string{"tight"}) {
		e.Errorf("ShadowLimited() = %v, want [tight]", got)
	}
	if d.Refused() != nil {
		e.Errorf("Refused() = %v, want nil", d.Refused())
	}
	want := []struct {
		used              int64
		exceeded, charged bool
	}{{4, false, true}, {3, true, false}, {3, false, false}}
	for i, w := range want {
		s := d.Statuses[i]
		if s.Used != w.used || s.Exceeded != w.exceeded || s.Charged != w.charged {
			e.Errorf("%s: used=%d exceeded=%v charged=%v, want %d %v %v",
				s.Limit.Name, s.Used, s.Exceeded, s.Charged, w.used, w.exceeded, w.charged)
		}
	}
	if d.Statuses[1].RetryAfter <= 0 {
		e.Errorf("shadow RetryAfter = %v, want > 0", d.Statuses[1].RetryAfter)
	}
	for range 6 {
		e.allow(lim, 1)
	}
	e.wantUsed(lim, 10, 3, 3)
	// The enforced limit refuses: nothing is charged.
	d = e.refuse(lim, 1)
	if r := d.Refused(); r == nil || r.Limit.Name != "enforced" {
		e.Errorf("Refused() = %v, want enforced", r)
	}
	e.wantUsed(lim, 10, 3, 3)

	// Shadow limits alone never refuse.
	only := []limiter.Limit{tight}
	e.clock.Advance(2 * time.Second)
	for range 5 {
		e.allow(only, 1)
	}
	e.wantUsed(only, 3)
}

func testQuotaMissing(e *env) {
	p := hourly
	lim := []limiter.Limit{e.rate("r", 10, time.Second), e.quota("q", 100, p), e.quota("q2", 100, p)}
	start, _ := p.Bounds(e.clock.Now())
	for _, cost := range []int64{1, 0} {
		d := e.raw(lim, cost)
		if d.Allowed || !slices.Equal(d.Missing, []int{1, 2}) {
			e.Fatalf("cost %d: allowed=%v missing=%v, want false [1 2]", cost, d.Allowed, d.Missing)
		}
		for i, name := range []string{"q", "q2"} {
			c := d.Statuses[i+1].Counter
			if c.Key != e.tag+name || !c.Start.Equal(start) {
				e.Errorf("counter %d = %q %v, want %q %v", i+1, c.Key, c.Start, e.tag+name, start)
			}
		}
		if d.Statuses[0].Charged {
			e.Errorf("rate limit charged while quotas were missing")
		}
	}
	e.seed(limiter.CounterValue{Counter: limiter.Counter{Key: e.tag + "q", Start: start}, Used: 40, Seq: 7})
	// One counter is still missing: still nothing is charged.
	if d := e.raw(lim, 1); !slices.Equal(d.Missing, []int{2}) {
		e.Errorf("after seeding q: missing = %v, want [2]", d.Missing)
	}
	e.seed(limiter.CounterValue{Counter: limiter.Counter{Key: e.tag + "q2", Start: start}})
	d := e.raw(lim, 1)
	if !d.Allowed || len(d.Missing) > 0 {
		e.Fatalf("after Seed: allowed=%v missing=%v, want true []", d.Allowed, d.Missing)
	}
	q := d.Statuses[1]
	if q.Used != 41 || q.Seq != 8 || !q.Charged || q.Remaining != 59 {
		e.Errorf("q: used=%d seq=%d charged=%v remaining=%d, want 41 8 true 59", q.Used, q.Seq, q.Charged, q.Remaining)
	}
	if q.Counter.Key != e.tag+"q" || !q.Counter.Start.Equal(start) {
		e.Errorf("q counter = %v, want %q %v", q.Counter, e.tag+"q", start)
	}
	if d.Statuses[0].Used != 1 || d.Statuses[2].Used != 1 || d.Statuses[2].Seq != 1 {
		e.Errorf("r used=%d, q2 used=%d seq=%d, want 1 1 1", d.Statuses[0].Used, d.Statuses[2].Used, d.Statuses[2].Seq)
	}
}

func testSeedDoesNotOverwrite(e *env) {
	p := hourly
	lim := []limiter.Limit{e.quota("q", 100, p)}
	start, _ := p.Bounds(e.clock.Now())
	c := limiter.Counter{Key: e.tag + "q", Start: start}
	e.seed(limiter.CounterValue{Counter: c, Used: 5, Seq: 2})
	e.seed(limiter.CounterValue{Counter: c, Used: 50, Seq: 9})
	d := e.allow(lim, 1)
	if s := d.Statuses[0]; s.Used != 6 || s.Seq != 3 {
		e.Errorf("used=%d seq=%d, want 6 3", s.Used, s.Seq)
	}
	e.seed(limiter.CounterValue{Counter: c})
	e.wantUsed(lim, 6)
}

func testQuotaRollover(e *env) {
	lim := []limiter.Limit{e.quota("q", 3, hourly)}
	e.clock.Set(time.Date(2026, 3, 2, 10, 59, 59, 900_000_000, time.UTC))
	for range 3 {
		e.allow(lim, 1)
	}
	d := e.refuse(lim, 1)
	s := d.Statuses[0]
	if s.RetryAfter != 100*time.Millisecond || s.Reset != 100*time.Millisecond {
		e.Errorf("RetryAfter=%v Reset=%v, want 100ms 100ms", s.RetryAfter, s.Reset)
	}
	if want := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC); !s.Counter.Start.Equal(want) {
		e.Errorf("counter start = %v, want %v", s.Counter.Start, want)
	}

	next := time.Date(2026, 3, 2, 11, 0, 0, 0, time.UTC)
	e.clock.Set(next)
	d = e.raw(lim, 1)
	if len(d.Missing) != 1 || !d.Statuses[0].Counter.Start.Equal(next) {
		e.Fatalf("at the boundary: missing=%v counter start=%v, want [0] %v", d.Missing, d.Statuses[0].Counter.Start, next)
	}
	d = e.allow(lim, 1)
	if s := d.Statuses[0]; s.Used != 1 || s.Seq != 1 || s.Reset != time.Hour {
		e.Errorf("new period: used=%d seq=%d reset=%v, want 1 1 1h", s.Used, s.Seq, s.Reset)
	}
}

func testQuotaRolloverZone(e *env) {
	ist := time.FixedZone("IST", 5*3600+1800)
	lim := []limiter.Limit{e.quota("q", 2, quota.Calendar{Unit: quota.Daily, Loc: ist})}
	// 18:29:59 UTC is 23:59:59 IST.
	e.clock.Set(time.Date(2026, 3, 2, 18, 29, 59, 0, time.UTC))
	for range 2 {
		e.allow(lim, 1)
	}
	d := e.refuse(lim, 1)
	s := d.Statuses[0]
	if want := time.Date(2026, 3, 2, 0, 0, 0, 0, ist); !s.Counter.Start.Equal(want) {
		e.Errorf("counter start = %v, want %v", s.Counter.Start, want)
	}
	if s.RetryAfter != time.Second || s.Reset != time.Second {
		e.Errorf("RetryAfter=%v Reset=%v, want 1s 1s", s.RetryAfter, s.Reset)
	}
	e.clock.Advance(time.Second)
	d = e.raw(lim, 1)
	if want := time.Date(2026, 3, 3, 0, 0, 0, 0, ist); len(d.Missing) != 1 || !d.Statuses[0].Counter.Start.Equal(want) {
		e.Fatalf("at IST midnight: missing=%v start=%v, want [0] %v", d.Missing, d.Statuses[0].Counter.Start, want)
	}
	if d := e.allow(lim, 1); d.Statuses[0].Used != 1 || d.Statuses[0].Reset != 24*time.Hour {
		e.Errorf("new day: used=%d reset=%v, want 1 24h", d.Statuses[0].Used, d.Statuses[0].Reset)
	}
}

func testRefund(e *env) {
	q := e.quota("q", 10, hourly)
	q.Refundable = true
	lim := []limiter.Limit{e.rate("r", 10, time.Second), q}
	e.clock.Set(time.Date(2026, 3, 2, 10, 59, 0, 0, time.UTC))
	e.allow(lim, 2)
	d := e.allow(lim, 2)
	c := d.Statuses[1].Counter
	if d.Statuses[1].Seq != 2 {
		e.Fatalf("seq = %d, want 2", d.Statuses[1].Seq)
	}
	values, err := e.store.Refund(e.ctx, []limiter.Counter{c}, 2)
	if err != nil {
		e.Fatal(err)
	}
	if len(values) != 1 || values[0].Key != c.Key || !values[0].Start.Equal(c.Start) || values[0].Used != 2 || values[0].Seq != 3 {
		e.Errorf("Refund = %+v, want [{%v 2 3}]", values, c)
	}
	// Rate windows are not refunded.
	e.wantUsed(lim, 4, 2)

	// A counter the store does not hold is skipped.
	other := limiter.Counter{Key: e.tag + "unknown", Start: c.Start}
	if values, err := e.store.Refund(e.ctx, []limiter.Counter{other}, 1); err != nil || len(values) != 0 {
		e.Errorf("Refund(unknown) = %v, %v, want none", values, err)
	}

	// After the period ended, the refund is skipped.
	e.clock.Set(time.Date(2026, 3, 2, 11, 0, 0, 0, time.UTC))
	if values, err := e.store.Refund(e.ctx, []limiter.Counter{c}, 2); err != nil || len(values) != 0 {
		e.Errorf("Refund after the period = %v, %v, want none", values, err)
	}
	if d := e.allow(lim, 1); d.Statuses[1].Used != 1 {
		e.Errorf("new period used = %d, want 1", d.Statuses[1].Used)
	}
}

func testReset(e *env) {
	q := e.quota("q", 10, hourly)
	again := q
	again.Name = "q-again"
	lim := []limiter.Limit{e.rate("r", 5, time.Second), q}
	e.clock.Set(time.Date(2026, 3, 2, 10, 30, 0, 0, time.UTC))
	e.allow(lim, 3)
	d := e.allow(lim, 2)
	e.refuse(lim, 1)
	c := d.Statuses[1].Counter

	values, err := e.store.Reset(e.ctx, append(lim, again))
	if err != nil {
		e.Fatal(err)
	}
	if len(values) != 1 || values[0].Key != c.Key || !values[0].Start.Equal(c.Start) || values[0].Used != 0 || values[0].Seq != 3 {
		e.Errorf("Reset = %+v, want one value [{%v 0 3}] (the quota named twice, reset once)", values, c)
	}
	e.wantUsed(lim, 0, 0)
	if d := e.allow(lim, 5); d.Statuses[1].Seq != 4 {
		e.Errorf("after Reset: quota seq = %d, want 4", d.Statuses[1].Seq)
	}

	// A quota counter the store does not hold is skipped, and stays missing.
	other := e.quota("other", 10, hourly)
	if values, err := e.store.Reset(e.ctx, []limiter.Limit{other}); err != nil || len(values) != 0 {
		e.Errorf("Reset(unheld quota) = %v, %v, want none", values, err)
	}
	if d := e.raw([]limiter.Limit{other}, 0); len(d.Missing) != 1 {
		e.Errorf("after Reset: unheld quota missing = %v, want [0]", d.Missing)
	}
	// Resetting what holds nothing is fine.
	if _, err := e.store.Reset(e.ctx, []limiter.Limit{e.rate("never", 1, time.Minute)}); err != nil {
		e.Errorf("Reset(unused rate limit): %v", err)
	}
}

func testStatusFields(e *env) {
	g := limiter.BucketWidth(time.Second) // 20ms
	lim := []limiter.Limit{e.rate("r", 4, time.Second), e.quota("q", 3, hourly)}

	// Nothing used: Reset 0, all remaining.
	d := e.decide(lim, 0)
	if s := d.Statuses[0]; s.Used != 0 || s.Remaining != 4 || s.Reset != 0 || s.Exceeded {
		e.Errorf("fresh: used=%d remaining=%d reset=%v exceeded=%v, want 0 4 0 false", s.Used, s.Remaining, s.Reset, s.Exceeded)
	}
	if s := d.Statuses[1]; s.Used != 0 || s.Remaining != 3 || s.Reset != time.Hour {
		e.Errorf("fresh quota: used=%d remaining=%d reset=%v, want 0 3 1h", s.Used, s.Remaining, s.Reset)
	}

	// Two units at +5ms, two at +405ms.
	e.clock.Set(Start.Add(5 * time.Millisecond))
	e.allow(lim[:1], 1)
	d = e.allow(lim[:1], 1)
	e.within("Reset after the first units", d.Statuses[0].Reset, time.Second, g)
	e.clock.Set(Start.Add(405 * time.Millisecond))
	e.allow(lim[:1], 1)
	d = e.allow(lim[:1], 1)
	s := d.Statuses[0]
	if s.Used != 4 || s.Remaining != 0 {
		e.Errorf("used=%d remaining=%d, want 4 0", s.Used, s.Remaining)
	}
	// The oldest unit leaves 1s after +5ms.
	e.within("Reset", s.Reset, 600*time.Millisecond, g)

	e.clock.Set(Start.Add(505 * time.Millisecond))
	// Cost 1 fits once the units of +5ms leave; cost 3 once those of
	// +405ms leave too.
	d = e.refuse(lim[:1], 1)
	e.within("RetryAfter(cost 1)", d.Statuses[0].RetryAfter, 500*time.Millisecond, g)
	e.within("Reset", d.Statuses[0].Reset, 500*time.Millisecond, g)
	d = e.refuse(lim[:1], 3)
	e.within("RetryAfter(cost 3)", d.Statuses[0].RetryAfter, 900*time.Millisecond, g)
	e.within("Reset", d.Statuses[0].Reset, 500*time.Millisecond, g)
	if s := d.Statuses[0]; s.Used != 4 || s.Remaining != 0 || !s.Exceeded {
		e.Errorf("used=%d remaining=%d exceeded=%v, want 4 0 true", s.Used, s.Remaining, s.Exceeded)
	}

	// Quota: Reset and RetryAfter run to the period end.
	q := lim[1:]
	for range 3 {
		e.allow(q, 1)
	}
	d = e.refuse(q, 1)
	want := time.Hour - 505*time.Millisecond
	if s := d.Statuses[0]; s.Used != 3 || s.Remaining != 0 || s.Reset != want || s.RetryAfter != want {
		e.Errorf("quota: used=%d remaining=%d reset=%v retry=%v, want 3 0 %v %v", s.Used, s.Remaining, s.Reset, s.RetryAfter, want, want)
	}
}

// testRetryAfterIsExact checks that a request retried after RetryAfter
// fits, and one a microsecond earlier does not, with costs and bucket
// offsets that do not line up.
func testRetryAfterIsExact(e *env) {
	steps := []struct {
		advance time.Duration
		cost    int64
	}{{0, 2}, {111 * time.Millisecond, 3}, {5 * time.Millisecond, 1}, {470 * time.Millisecond, 1}}
	for i, cost := range []int64{1, 3, 5, 7} {
		lim := []limiter.Limit{e.rate("r"+strconv.FormatInt(cost, 10), 7, 1300*time.Millisecond)}
		e.clock.Set(Start.Add(time.Duration(i)*10*time.Second + 3777*time.Microsecond))
		for _, s := range steps {
			e.clock.Advance(s.advance)
			e.allow(lim, s.cost)
		}
		ra := e.refuse(lim, cost).Statuses[0].RetryAfter
		e.clock.Advance(ra - time.Microsecond)
		e.refuse(lim, cost)
		e.clock.Advance(time.Microsecond)
		if d := e.decide(lim, 0); d.Statuses[0].Used+cost > 7 {
			e.Errorf("cost %d: at RetryAfter (%v) used = %d, the cost does not fit", cost, ra, d.Statuses[0].Used)
		}
	}
}

func testPeek(e *env) {
	lim := []limiter.Limit{e.rate("r", 5, time.Second), e.quota("q", 10, hourly)}
	d := e.decide(lim, 0)
	if !d.Allowed {
		e.Errorf("peek on fresh counters refused")
	}
	for _, s := range d.Statuses {
		if s.Used != 0 || s.Charged || s.Seq != 0 {
			e.Errorf("%s: used=%d charged=%v seq=%d, want 0 false 0", s.Limit.Name, s.Used, s.Charged, s.Seq)
		}
	}
	e.allow(lim, 2)
	for range 3 {
		d = e.decide(lim, 0)
		if s := d.Statuses[0]; s.Used != 2 || s.Remaining != 3 || s.Charged {
			e.Errorf("rate peek: used=%d remaining=%d charged=%v, want 2 3 false", s.Used, s.Remaining, s.Charged)
		}
		if s := d.Statuses[1]; s.Used != 2 || s.Seq != 1 || s.Charged {
			e.Errorf("quota peek: used=%d seq=%d charged=%v, want 2 1 false", s.Used, s.Seq, s.Charged)
		}
	}
	e.allow(lim, 3)
	// A full limit still reads: cost 0 fits.
	if d := e.decide(lim, 0); !d.Allowed || d.Statuses[0].Used != 5 || d.Statuses[0].Exceeded {
		e.Errorf("peek on a full limit: allowed=%v used=%d exceeded=%v, want true 5 false", d.Allowed, d.Statuses[0].Used, d.Statuses[0].Exceeded)
	}
	e.refuse(lim, 1)
}

// testSharedCounter checks that limits naming one counter share it, and
// that a request charges it once.
func testSharedCounter(e *env) {
	a := e.rate("r", 10, time.Second)
	b := a
	b.Name, b.Limit = "r-strict", 4
	q := e.quota("q", 100, hourly)
	q2 := q
	q2.Name = "q-again"
	lim := []limiter.Limit{a, b, q, q2}
	for i := int64(1); i <= 2; i++ {
		d := e.allow(lim, 2)
		for _, s := range d.Statuses {
			if s.Used != 2*i {
				e.Errorf("%s: used = %d, want %d", s.Limit.Name, s.Used, 2*i)
			}
		}
		if s := d.Statuses[3]; s.Seq != i {
			e.Errorf("quota seq = %d, want %d", s.Seq, i)
		}
	}
	d := e.refuse(lim, 1)
	if d.Statuses[0].Exceeded || !d.Statuses[1].Exceeded {
		e.Errorf("exceeded = %v %v, want false true", d.Statuses[0].Exceeded, d.Statuses[1].Exceeded)
	}
	// A refund names the counter once per status; it is refunded once.
	values, err := e.store.Refund(e.ctx, []limiter.Counter{d.Statuses[2].Counter, d.Statuses[3].Counter}, 2)
	if err != nil {
		e.Fatal(err)
	}
	if len(values) != 1 || values[0].Used != 2 {
		e.Errorf("Refund of one counter named twice = %+v, want one value with used 2", values)
	}
}

func testConcurrent(e *env) {
	lim := []limiter.Limit{e.rate("r", 100, time.Second), e.quota("q", 1000, hourly)}
	e.decide(lim, 0) // seed the quota
	const goroutines, each = 16, 25
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		allowed int64
		errs    []error
	)
	for range goroutines {
		wg.Go(func() {
			for range each {
				d, err := e.store.Decide(e.ctx, lim, 1)
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, err)
				case len(d.Missing) > 0:
					errs = append(errs, fmt.Errorf("missing %v", d.Missing))
				case d.Allowed:
					allowed++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		e.Fatalf("%d errors, first: %v", len(errs), errs[0])
	}
	if allowed != 100 {
		e.Errorf("%d goroutines × %d requests on a frozen clock: %d allowed, want exactly 100", goroutines, each, allowed)
	}
	e.wantUsed(lim, 100, 100)
	if d := e.decide(lim, 0); d.Statuses[1].Seq != 100 {
		e.Errorf("quota seq = %d, want 100", d.Statuses[1].Seq)
	}
}

// testLargeCounts checks a window and a quota whose usage grows past what
// 1, 2 and 4 bytes hold (a store may pack counts): every decision against
// the reference model, and the quota's usage and seq.
func testLargeCounts(e *env) {
	costs := []int64{200, 100, 70_000, 3, 5_000_000_000, 1, 4_000_000_000, 900_000_000, 2, 7, 300}
	lim := []limiter.Limit{e.rate("big", 10_000_000_000, 10*time.Second)}
	t := e.clock.Now().Add(time.Hour).Truncate(time.Second).UnixMicro()
	var reqs []request
	for round := range 3 {
		for _, c := range costs {
			reqs = append(reqs, request{t, c})
			t += 700_000 + int64(round)*1_300_000
		}
	}
	if _, err := simulate(e.ctx, e.store, e.clock, lim, reqs, true); err != nil {
		e.Fatal(err)
	}

	q := []limiter.Limit{e.quota("bigq", 100_000_000_000, hourly)}
	var used int64
	for i, c := range costs {
		d := e.allow(q, c)
		used += c
		if s := d.Statuses[0]; s.Used != used || s.Seq != int64(i+1) {
			e.Errorf("quota after %d charges: used=%d seq=%d, want %d %d", i+1, s.Used, s.Seq, used, i+1)
		}
	}
}
