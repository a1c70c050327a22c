package memstore_test

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/memstore"
	"github.com/gaia-proxy/gaia-proxy/limiter/storetest"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock *storetest.Clock) limiter.Store {
		return memstore.New(clock.Now)
	})
}

// subject returns the limits of a typical request of subject i: two
// rate windows and a quota.
func subject(i int, limit int64, p limiter.Period) []limiter.Limit {
	id := strconv.Itoa(i)
	tag := "{user:u" + id + "}"
	return []limiter.Limit{
		{Name: "pro-1s", Key: tag + "key:k" + id + "/r1s", Limit: limit, Window: time.Second},
		{Name: "pro-1m", Key: tag + "key:k" + id + "/r1m", Limit: limit, Window: time.Minute},
		{Name: "pro-" + p.String(), Key: tag + "user:u" + id + "/q" + p.String(), Limit: limit, Period: p},
	}
}

// decide decides, seeding missing quotas with zero first.
func decide(tb testing.TB, s *memstore.Store, limits []limiter.Limit, cost int64) limiter.Decision {
	tb.Helper()
	d, err := limiter.New(s, nil).Decide(context.Background(), limits, cost)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

func TestEviction(t *testing.T) {
	clock := storetest.NewClock(storetest.Start)
	s := memstore.New(clock.Now)
	const n = 1000
	for i := range n {
		decide(t, s, subject(i, 100, utcDay), 1)
	}
	if got := s.Len(); got != 3*n {
		t.Fatalf("Len = %d after %d subjects, want %d", got, n, 3*n)
	}

	// Reads, and requests refused because they cost more than the
	// limit, create no state.
	decide(t, s, subject(n, 100, utcDay)[:2], 0)
	decide(t, s, subject(n+1, 100, utcDay)[:2], 101)
	if got := s.Len(); got != 3*n {
		t.Errorf("Len = %d after a peek and a refusal on new subjects, want %d", got, 3*n)
	}

	busy := subject(-1, 1_000_000, utcDay)
	// sweep moves the clock by d in steps long enough for one shard
	// sweep each, keeping busy alive, and returns Len.
	sweep := func(d time.Duration) int {
		for step := time.Second; d > 0; d -= step {
			clock.Advance(min(step, d))
			decide(t, s, busy, 1)
		}
		return s.Len()
	}

	// After 3 minutes every window has emptied and every shard has
	// been swept since; the quotas stay.
	if got := sweep(3 * time.Minute); got != n+3 {
		t.Errorf("after 3m: Len = %d, want %d (the quotas, and busy)", got, n+3)
	}
	// After 10 idle minutes, the quotas go too.
	if got := sweep(10 * time.Minute); got != 3 {
		t.Errorf("after 13m: Len = %d, want 3 (busy)", got)
	}
	// An evicted quota counter is missing again: the ledger seeds it.
	d, err := s.Decide(t.Context(), subject(0, 100, utcDay), 1)
	if err != nil || len(d.Missing) != 1 {
		t.Errorf("evicted quota: missing = %v, %v, want [2]", d.Missing, err)
	}

	// A busy counter whose period ended goes at the next sweep.
	clock.Set(time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC))
	if got := sweep(2 * time.Minute); got != 3 {
		t.Errorf("next day: Len = %d, want 3 (busy's windows and its new quota)", got)
	}
}

// TestRefundAfterEviction checks that a refund of an evicted counter is
// skipped: the ledger has its value.
func TestRefundAfterEviction(t *testing.T) {
	clock := storetest.NewClock(storetest.Start)
	s := memstore.New(clock.Now)
	d := decide(t, s, subject(1, 10, utcDay), 1)
	c := d.Statuses[2].Counter
	for range 64 * 12 {
		clock.Advance(time.Second)
		decide(t, s, nil, 0)
	}
	values, err := s.Refund(t.Context(), []limiter.Counter{c}, 1)
	if err != nil || len(values) != 0 {
		t.Errorf("Refund of an evicted counter = %v, %v, want none", values, err)
	}
}

func TestNegativeCost(t *testing.T) {
	s := memstore.New(nil)
	if _, err := s.Decide(t.Context(), subject(1, 10, utcDay), -1); err == nil {
		t.Error("Decide with cost -1: no error")
	}
	if _, err := s.Refund(t.Context(), nil, -1); err == nil {
		t.Error("Refund with cost -1: no error")
	}
}

// TestClockBack checks that a clock stepping back counts requests in the
// newest bucket, which keeps the limit.
func TestClockBack(t *testing.T) {
	clock := storetest.NewClock(storetest.Start)
	s := memstore.New(clock.Now)
	lim := subject(1, 5, utcDay)[:1]
	clock.Advance(900 * time.Millisecond)
	for range 5 {
		decide(t, s, lim, 1)
	}
	clock.Set(storetest.Start)
	if d := decide(t, s, lim, 1); d.Allowed || d.Statuses[0].Used != 5 {
		t.Errorf("clock back: allowed=%v used=%d, want false 5", d.Allowed, d.Statuses[0].Used)
	}
	// The units leave as if charged at +900ms: 51 buckets of 20ms later.
	clock.Set(storetest.Start.Add(1920 * time.Millisecond))
	if d := decide(t, s, lim, 1); !d.Allowed || d.Statuses[0].Used != 1 {
		t.Errorf("later: allowed=%v used=%d, want true 1", d.Allowed, d.Statuses[0].Used)
	}
}

// BenchmarkDecide decides requests of 10k subjects, each with two rate
// windows and a quota, like a real request, on the real clock.
func BenchmarkDecide(b *testing.B) {
	const subjects = 10_000
	for _, goroutines := range []int{1, 64} {
		b.Run("goroutines="+strconv.Itoa(goroutines), func(b *testing.B) {
			s := memstore.New(nil)
			limits := make([][]limiter.Limit, subjects)
			for i := range limits {
				limits[i] = subject(i, 1<<40, utcMonth)
				decide(b, s, limits[i], 0) // seed the quota
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			if goroutines == 1 {
				i := 0
				for b.Loop() {
					if _, err := s.Decide(ctx, limits[i], 1); err != nil {
						b.Fatal(err)
					}
					i = (i + 7919) % subjects
				}
				return
			}
			b.SetParallelism((goroutines + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			b.RunParallel(func(pb *testing.PB) {
				i := int(time.Now().UnixNano() % subjects)
				for pb.Next() {
					if _, err := s.Decide(ctx, limits[i], 1); err != nil {
						b.Error(err)
						return
					}
					i = (i + 7919) % subjects
				}
			})
		})
	}
}

// Example shows a sliding window of 2 per second. The third request is
// refused until the first two leave the window's span.
func Example() {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s := memstore.New(func() time.Time { return now })
	limits := []limiter.Limit{{Name: "free-1s", Key: "{ip:192.0.2.1}ip:192.0.2.1/r1s", Limit: 2, Window: time.Second}}
	show := func() {
		d, err := s.Decide(context.Background(), limits, 1)
		if err != nil {
			panic(err)
		}
		st := d.Statuses[0]
		fmt.Printf("allowed=%v remaining=%d retry_after=%v\n", d.Allowed, st.Remaining, st.RetryAfter)
	}
	show()
	show()
	show()
	now = now.Add(1020 * time.Millisecond)
	show()
	// Output:
	// allowed=true remaining=1 retry_after=0s
	// allowed=true remaining=0 retry_after=0s
	// allowed=false remaining=0 retry_after=1.02s
	// allowed=true remaining=1 retry_after=0s
}

// UTC days and months.
var (
	utcDay   = quota.Calendar{Unit: quota.Daily, Loc: time.UTC}
	utcMonth = quota.Calendar{Unit: quota.Monthly, Loc: time.UTC}
)

// TestRaise checks quota.Raiser's rule, as on Redis: a counter behind
// the ledger (lower seq, or the same seq with other usage) takes the
// larger usage and a seq above both; one ahead, or missing, is left
// alone; raising again changes nothing.
func TestRaise(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock(storetest.Start)
	s := memstore.New(clock.Now)
	var _ quota.Raiser = s
	day := quota.Calendar{Unit: quota.Daily, Loc: time.UTC}
	counter := func(user string) limiter.Counter {
		t.Helper()
		d, err := s.Decide(ctx, []limiter.Limit{{Name: "q", Key: "{user:" + user + "}q", Limit: 1000, Period: day}}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return d.Statuses[0].Counter
	}
	val := func(c limiter.Counter, used, seq int64) limiter.CounterValue {
		return limiter.CounterValue{Counter: c, Used: used, Seq: seq}
	}
	behind, forked, ahead, missing := counter("behind"), counter("forked"), counter("ahead"), counter("missing")
	if err := s.Seed(ctx, []limiter.CounterValue{val(behind, 2, 2), val(forked, 5, 5), val(ahead, 7, 7)}); err != nil {
		t.Fatal(err)
	}
	ledger := []limiter.CounterValue{val(behind, 20, 20), val(forked, 3, 5), val(ahead, 4, 3), val(missing, 9, 9)}
	raised, err := s.Raise(ctx, ledger)
	if err != nil {
		t.Fatal(err)
	}
	want := []limiter.CounterValue{val(behind, 20, 21), val(forked, 5, 6)}
	if fmt.Sprint(raised) != fmt.Sprint(want) {
		t.Errorf("Raise = %v, want %v", raised, want)
	}
	if again, err := s.Raise(ctx, ledger); err != nil || len(again) != 0 {
		t.Errorf("Raise again = %v, %v; want nothing raised", again, err)
	}
	if d, err := s.Decide(ctx, []limiter.Limit{{Name: "q", Key: "{user:missing}q", Limit: 1000, Period: day}}, 0); err != nil || len(d.Missing) != 1 {
		t.Errorf("a counter the store does not hold: %+v, %v; want it still missing", d, err)
	}
}
