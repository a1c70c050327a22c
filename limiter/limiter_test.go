package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/memstore"
)

// ledger is a fake limiter.Ledger.
type ledger struct {
	load     func([]limiter.Counter) ([]limiter.CounterValue, error)
	recorded []limiter.CounterValue
}

func (l *ledger) Load(_ context.Context, counters []limiter.Counter) ([]limiter.CounterValue, error) {
	return l.load(counters)
}

func (l *ledger) Record(values []limiter.CounterValue) { l.recorded = append(l.recorded, values...) }

func TestLimiterSeedsAndRecords(t *testing.T) {
	led := &ledger{load: func(cs []limiter.Counter) ([]limiter.CounterValue, error) {
		v := make([]limiter.CounterValue, len(cs))
		for i := range v {
			v[i] = limiter.CounterValue{Used: 7, Seq: 3} // the limiter fills in Counter
		}
		return v, nil
	}}
	lim := limiter.New(memstore.New(func() time.Time { return now }), &limiter.Options{Ledger: led})
	limits := []limiter.Limit{
		{Name: "r", Key: "{user:a}r", Limit: 10, Window: time.Second},
		{Name: "q", Key: "{user:a}q", Limit: 10, Period: daily, Refundable: true},
	}
	d, err := lim.Decide(t.Context(), limits, 2)
	if err != nil {
		t.Fatal(err)
	}
	q := d.Statuses[1]
	if !d.Allowed || q.Used != 9 || q.Seq != 4 {
		t.Fatalf("allowed=%v used=%d seq=%d, want true 9 4 (seeded 7, seq 3)", d.Allowed, q.Used, q.Seq)
	}
	want := []limiter.CounterValue{{Counter: q.Counter, Used: 9, Seq: 4}}
	if !slices.Equal(led.recorded, want) {
		t.Errorf("recorded %+v, want %+v", led.recorded, want)
	}

	if err := lim.Refund(t.Context(), &d, 2); err != nil {
		t.Fatal(err)
	}
	want = append(want, limiter.CounterValue{Counter: q.Counter, Used: 7, Seq: 5})
	if !slices.Equal(led.recorded, want) {
		t.Errorf("after Refund: recorded %+v, want %+v", led.recorded, want)
	}

	// Reads record nothing.
	if _, err := lim.Decide(t.Context(), limits, 0); err != nil {
		t.Fatal(err)
	}
	if len(led.recorded) != 2 {
		t.Errorf("a read recorded %+v", led.recorded[2:])
	}
}

func TestLimiterLedgerDown(t *testing.T) {
	boom := errors.New("boom")
	led := &ledger{load: func([]limiter.Counter) ([]limiter.CounterValue, error) { return nil, boom }}
	var logged []string
	lim := limiter.New(memstore.New(nil), &limiter.Options{Ledger: led, Logf: func(f string, a ...any) {
		logged = append(logged, fmt.Sprintf(f, a...))
	}})
	limits := []limiter.Limit{{Name: "q", Key: "q", Limit: 1, Period: daily}}
	// The ledger is away: the counter starts from zero and the quota is
	// still enforced from the hot path.
	if d, err := lim.Decide(t.Context(), limits, 1); err != nil || !d.Allowed {
		t.Fatalf("first: allowed=%v, %v; want allowed", d.Allowed, err)
	}
	if d, err := lim.Decide(t.Context(), limits, 1); err != nil || d.Allowed {
		t.Errorf("second: allowed=%v, %v; want refused", d.Allowed, err)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "boom") {
		t.Errorf("logged %q, want one line naming the ledger's error", logged)
	}
}

func TestLimiterWithoutLedger(t *testing.T) {
	lim := limiter.New(memstore.New(nil), nil)
	limits := []limiter.Limit{{Name: "q", Key: "q", Limit: 1, Period: daily}}
	if d, err := lim.Decide(t.Context(), limits, 1); err != nil || !d.Allowed || d.Statuses[0].Used != 1 {
		t.Fatalf("first: %+v, %v, want allowed, used 1", d, err)
	}
	if d, err := lim.Decide(t.Context(), limits, 1); err != nil || d.Allowed {
		t.Errorf("second: allowed=%v, %v, want refused", d.Allowed, err)
	}
}

// TestLimiterReset: a counter the store does not hold is seeded from the
// ledger before it is zeroed, so the zero outranks the ledger's value.
func TestLimiterReset(t *testing.T) {
	led := &ledger{load: func(cs []limiter.Counter) ([]limiter.CounterValue, error) {
		v := make([]limiter.CounterValue, len(cs))
		for i := range v {
			v[i] = limiter.CounterValue{Used: 7, Seq: 30}
		}
		return v, nil
	}}
	lim := limiter.New(memstore.New(func() time.Time { return now }), &limiter.Options{Ledger: led})
	limits := []limiter.Limit{
		{Name: "r", Key: "{user:a}r", Limit: 2, Window: time.Minute},
		{Name: "q", Key: "{user:a}q", Limit: 10, Period: daily},
	}
	if err := lim.Reset(t.Context(), limits); err != nil {
		t.Fatal(err)
	}
	start, _ := daily.Bounds(now)
	want := []limiter.CounterValue{{Counter: limiter.Counter{Key: "{user:a}q", Start: start}, Used: 0, Seq: 31}}
	if !slices.Equal(led.recorded, want) {
		t.Errorf("recorded %+v, want %+v", led.recorded, want)
	}
	for range 2 {
		if d, err := lim.Decide(t.Context(), limits, 1); err != nil || !d.Allowed {
			t.Fatalf("decide: allowed=%v, %v", d.Allowed, err)
		}
	}
	if err := lim.Reset(t.Context(), limits); err != nil {
		t.Fatal(err)
	}
	d, err := lim.Decide(t.Context(), limits, 0)
	if err != nil || d.Statuses[0].Used != 0 || d.Statuses[1].Used != 0 || d.Statuses[1].Seq != 34 {
		t.Errorf("after the second Reset: %+v, %v, want rate and quota at 0, quota seq 34", d.Statuses, err)
	}
}

// stuckLedger's Load answers only when its context ends.
type stuckLedger struct{ ledger }

func (l *stuckLedger) Load(ctx context.Context, _ []limiter.Counter) ([]limiter.CounterValue, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(10 * time.Second):
		return nil, errors.New("Load was given 10 s and no deadline")
	}
}

// TestSeedBoundsLedger checks that a ledger that does not answer holds a
// decision that seeds quota counters only until Options.LedgerTimeout:
// the counters then start from zero, as when the ledger is down.
func TestSeedBoundsLedger(t *testing.T) {
	var logged []string
	lim := limiter.New(memstore.New(func() time.Time { return now }), &limiter.Options{
		Ledger: &stuckLedger{}, LedgerTimeout: 20 * time.Millisecond,
		Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) },
	})
	q := []limiter.Limit{{Name: "q", Key: "{user:a}q", Limit: 10, Period: daily}}
	d, err := lim.Decide(t.Context(), q, 1)
	if err != nil || !d.Allowed || d.Statuses[0].Used != 1 {
		t.Fatalf("Decide = %+v, %v; want allowed, used 1 (seeded from zero)", d, err)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "deadline exceeded") {
		t.Errorf("logged %q, want one line saying the ledger gave no answer in time", logged)
	}
}

// TestSeedAcrossPeriodEnd checks that a decision seeds again when a
// period ended between its seed and the decision after it (the store
// then misses the next period's counter), and refuses to guess only
// when counters keep vanishing.
func TestSeedAcrossPeriodEnd(t *testing.T) {
	q := []limiter.Limit{{Name: "q", Key: "{user:a}q", Limit: 10, Period: daily}}
	for _, tc := range []struct {
		misses, seeds int
		ok            bool
	}{{1, 1, true}, {2, 2, true}, {3, 2, false}} {
		decides, seeds := 0, 0
		store := &fake{
			decide: func(context.Context, []limiter.Limit, int64) (limiter.Decision, error) {
				decides++
				st := []limiter.Status{{Limit: q[0], Counter: limiter.Counter{Key: q[0].Key, Start: now}}}
				if decides <= tc.misses {
					return limiter.Decision{Statuses: st, Missing: []int{0}}, nil
				}
				st[0].Used, st[0].Charged = 1, true
				return limiter.Decision{Allowed: true, Statuses: st}, nil
			},
			seed: func(context.Context, []limiter.CounterValue) error { seeds++; return nil },
		}
		lim := limiter.New(store, &limiter.Options{Timeout: -1, FailureMode: limiter.FailureClosed, Logf: t.Logf})
		d, err := lim.Decide(t.Context(), q, 1)
		if (err == nil) != tc.ok || d.Allowed != tc.ok || seeds != tc.seeds {
			t.Errorf("missing %d times: Decide = allowed %v, %v after %d seeds; want ok %v after %d", tc.misses, d.Allowed, err, seeds, tc.ok, tc.seeds)
		}
	}
}

// TestSeedFromPartialLedger: a ledger that fails but still knows values
// (those recorded and not yet written) seeds with them, not with zero.
func TestSeedFromPartialLedger(t *testing.T) {
	led := &ledger{load: func(cs []limiter.Counter) ([]limiter.CounterValue, error) {
		return []limiter.CounterValue{{Used: 9, Seq: 4}}, errors.New("quota: load: connection refused")
	}}
	lim := limiter.New(memstore.New(func() time.Time { return now }), &limiter.Options{Ledger: led, Logf: t.Logf})
	q := []limiter.Limit{{Name: "q", Key: "{user:a}q", Limit: 10, Period: daily}}
	for i, want := range []bool{true, false} {
		d, err := lim.Decide(t.Context(), q, 1)
		if err != nil || d.Allowed != want {
			t.Fatalf("request %d: %+v, %v; want allowed %v (9 of 10 used before)", i+1, d, err, want)
		}
	}
}

// TestAfterRefund: AfterRefund gives back what Refund does, to the
// statuses Refund touches: cost to a charged refundable quota, 1 to a
// PerRequest one; nothing to a rate limit, a quota not refundable or not
// charged, or a refused decision. It leaves the decision it reads alone.
func TestAfterRefund(t *testing.T) {
	st := func(l limiter.Limit, used int64, charged bool) limiter.Status {
		return limiter.Status{Limit: l, Used: used, Remaining: max(0, l.Limit-used), Charged: charged}
	}
	d := limiter.Decision{Allowed: true, Statuses: []limiter.Status{
		st(limiter.Limit{Name: "r", Limit: 10, Window: time.Second}, 4, true),
		st(limiter.Limit{Name: "q", Limit: 100, Period: daily, Refundable: true}, 30, true),
		st(limiter.Limit{Name: "p", Limit: 5, Period: daily, Refundable: true, PerRequest: true}, 5, true),
		st(limiter.Limit{Name: "n", Limit: 100, Period: daily}, 30, true),
		st(limiter.Limit{Name: "u", Limit: 100, Period: daily, Refundable: true}, 30, false),
	}}
	got, ok := d.AfterRefund(3)
	if !ok {
		t.Fatal("AfterRefund reports nothing given back")
	}
	for i, want := range []struct {
		used, remaining int64
		charged         bool
	}{{4, 6, true}, {27, 73, false}, {4, 1, false}, {30, 70, true}, {30, 70, false}} {
		if s := got.Statuses[i]; s.Used != want.used || s.Remaining != want.remaining || s.Charged != want.charged {
			t.Errorf("%s: used %d, remaining %d, charged %v; want %d, %d, %v", s.Limit.Name, s.Used, s.Remaining, s.Charged, want.used, want.remaining, want.charged)
		}
	}
	if d.Statuses[1].Used != 30 || !d.Statuses[1].Charged {
		t.Errorf("AfterRefund changed the decision it read: %+v", d.Statuses[1])
	}
	d.Allowed = false
	if _, ok := d.AfterRefund(3); ok {
		t.Error("a refused decision has something given back")
	}
}
