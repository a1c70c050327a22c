package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/memstore"
	"github.com/gaia-proxy/gaia-proxy/limiter/storetest"
)

var errDown = errors.New("dial tcp 10.0.0.7:6379: connection refused")

// fake is a hand-written limiter.Store: each method calls its func field
// and counts the call.
type fake struct {
	decide func(ctx context.Context, limits []limiter.Limit, cost int64) (limiter.Decision, error)
	seed   func(ctx context.Context, values []limiter.CounterValue) error
	refund func(ctx context.Context, counters []limiter.Counter, cost int64) ([]limiter.CounterValue, error)
	reset  func(ctx context.Context, limits []limiter.Limit) ([]limiter.CounterValue, error)

	decides, refunds atomic.Int64
}

func (f *fake) Decide(ctx context.Context, limits []limiter.Limit, cost int64) (limiter.Decision, error) {
	f.decides.Add(1)
	return f.decide(ctx, limits, cost)
}

func (f *fake) Seed(ctx context.Context, values []limiter.CounterValue) error {
	return f.seed(ctx, values)
}

func (f *fake) Refund(ctx context.Context, counters []limiter.Counter, cost int64) ([]limiter.CounterValue, error) {
	f.refunds.Add(1)
	return f.refund(ctx, counters, cost)
}

func (f *fake) Reset(ctx context.Context, limits []limiter.Limit) ([]limiter.CounterValue, error) {
	return f.reset(ctx, limits)
}

// switchable returns a fake deciding with a memstore, that fails every
// call with errDown while down is set.
func switchable(now func() time.Time, down *atomic.Bool) *fake {
	ms := memstore.New(now)
	return &fake{
		decide: func(ctx context.Context, limits []limiter.Limit, cost int64) (limiter.Decision, error) {
			if down.Load() {
				return limiter.Decision{}, errDown
			}
			return ms.Decide(ctx, limits, cost)
		},
		seed: func(ctx context.Context, values []limiter.CounterValue) error {
			if down.Load() {
				return errDown
			}
			return ms.Seed(ctx, values)
		},
		refund: func(ctx context.Context, counters []limiter.Counter, cost int64) ([]limiter.CounterValue, error) {
			if down.Load() {
				return nil, errDown
			}
			return ms.Refund(ctx, counters, cost)
		},
		reset: func(ctx context.Context, limits []limiter.Limit) ([]limiter.CounterValue, error) {
			if down.Load() {
				return nil, errDown
			}
			return ms.Reset(ctx, limits)
		},
	}
}

// failing returns a fake whose every call fails with err.
func failing(err error) *fake {
	return &fake{
		decide: func(context.Context, []limiter.Limit, int64) (limiter.Decision, error) {
			return limiter.Decision{}, err
		},
		seed:   func(context.Context, []limiter.CounterValue) error { return err },
		refund: func(context.Context, []limiter.Counter, int64) ([]limiter.CounterValue, error) { return nil, err },
		reset:  func(context.Context, []limiter.Limit) ([]limiter.CounterValue, error) { return nil, err },
	}
}

// hanging returns a fake whose every call blocks until ctx is done.
func hanging() *fake {
	return &fake{
		decide: func(ctx context.Context, _ []limiter.Limit, _ int64) (limiter.Decision, error) {
			<-ctx.Done()
			return limiter.Decision{}, ctx.Err()
		},
		seed: func(ctx context.Context, _ []limiter.CounterValue) error { <-ctx.Done(); return ctx.Err() },
		refund: func(ctx context.Context, _ []limiter.Counter, _ int64) ([]limiter.CounterValue, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
	}
}

// logs collects log lines; safe for concurrent use.
type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logs) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// fallbacks makes the fallback stores of a Limiter and keeps them, each
// a counting fake over a memstore.
type fallbacks struct {
	now    func() time.Time
	mu     sync.Mutex
	stores []*fake
}

func (f *fallbacks) New() limiter.Store {
	var up atomic.Bool
	s := switchable(f.now, &up)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stores = append(f.stores, s)
	return s
}

func (f *fallbacks) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.stores)
}

func (f *fallbacks) last() *fake {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stores[len(f.stores)-1]
}

var perMinute = []limiter.Limit{{Name: "r", Key: "{user:a}r", Limit: 3, Window: time.Minute}}

func TestParseFailureMode(t *testing.T) {
	for _, m := range []limiter.FailureMode{limiter.FailureLocal, limiter.FailureOpen, limiter.FailureClosed} {
		if got, err := limiter.ParseFailureMode(m.String()); got != m || err != nil {
			t.Errorf("ParseFailureMode(%q) = %v, %v; want %v", m, got, err, m)
		}
	}
	if _, err := limiter.ParseFailureMode("fail-open"); err == nil || !strings.Contains(err.Error(), `"fail-open"`) {
		t.Errorf("ParseFailureMode(fail-open) error = %v, want one naming the value", err)
	}
	if m := (limiter.Options{}).FailureMode; m != limiter.FailureLocal {
		t.Errorf("zero FailureMode = %v, want local", m)
	}
}

// TestFailureModes checks the answer of each mode to a store that fails
// and to one that never answers.
func TestFailureModes(t *testing.T) {
	stores := []struct {
		name  string
		store func() *fake
		cause string
	}{
		{"error", func() *fake { return failing(errDown) }, "connection refused"},
		{"hang", hanging, "no answer within 10ms"},
	}
	modes := []struct {
		mode  limiter.FailureMode
		check func(t *testing.T, d limiter.Decision, err error, cause string)
	}{
		{limiter.FailureLocal, func(t *testing.T, d limiter.Decision, err error, _ string) {
			if err != nil || !d.Allowed || len(d.Statuses) != 1 || d.Statuses[0].Used != 1 {
				t.Errorf("got %+v, %v; want allowed by the fallback, used 1", d, err)
			}
		}},
		{limiter.FailureOpen, func(t *testing.T, d limiter.Decision, err error, _ string) {
			if err != nil || !d.Allowed || len(d.Statuses) != 0 {
				t.Errorf("got %+v, %v; want allowed with no statuses", d, err)
			}
		}},
		{limiter.FailureClosed, func(t *testing.T, d limiter.Decision, err error, cause string) {
			if !errors.Is(err, limiter.ErrUnavailable) || !strings.Contains(err.Error(), cause) || d.Allowed {
				t.Errorf("got allowed=%v, %v; want ErrUnavailable naming %q", d.Allowed, err, cause)
			}
		}},
	}
	for _, s := range stores {
		for _, m := range modes {
			t.Run(s.name+"/"+m.mode.String(), func(t *testing.T) {
				t.Parallel()
				fb := &fallbacks{}
				primary := s.store()
				lim := limiter.New(primary, &limiter.Options{
					FailureMode: m.mode, Fallback: fb.New, Timeout: 10 * time.Millisecond, Logf: t.Logf,
				})
				start := time.Now()
				d, err := lim.Decide(t.Context(), perMinute, 1)
				if took := time.Since(start); took > 2*time.Second {
					t.Errorf("decision took %v with a 10ms timeout", took)
				}
				m.check(t, d, err, s.cause)
				// Reads take the same path.
				d, err = lim.Decide(t.Context(), perMinute, 0)
				m.check(t, d, err, s.cause)
				if n := primary.decides.Load(); n != 2 {
					t.Errorf("primary called %d times, want 2", n)
				}
			})
		}
	}
}

func TestFailureLocalWithoutFallback(t *testing.T) {
	var log logs
	lim := limiter.New(failing(errDown), &limiter.Options{TripAfter: 1, Logf: log.logf})
	if _, err := lim.Decide(t.Context(), perMinute, 1); !errors.Is(err, limiter.ErrUnavailable) {
		t.Errorf("err = %v, want ErrUnavailable", err)
	}
	if l := log.get(); len(l) != 1 || !strings.Contains(l[0], "no fallback store") {
		t.Errorf("logged %q, want one line saying there is no fallback store", l)
	}
	if s := lim.State(); s.Mode != "closed" {
		t.Errorf("State().Mode = %q, want closed", s.Mode)
	}
}

// TestBreaker walks the breaker through an outage with the default
// settings: 3 failures open it, probes come after 100ms doubling up to
// 5s, and the first successful probe closes it.
func TestBreaker(t *testing.T) {
	clock := storetest.NewClock(storetest.Start)
	var down atomic.Bool
	var log logs
	primary := switchable(clock.Now, &down)
	fb := &fallbacks{now: clock.Now}
	lim := limiter.New(primary, &limiter.Options{Name: "redis", Fallback: fb.New, Now: clock.Now, Logf: log.logf})
	limits := []limiter.Limit{{Name: "r", Key: "r", Limit: 1000, Window: time.Second}}
	decide := func() {
		t.Helper()
		if d, err := lim.Decide(t.Context(), limits, 1); err != nil || !d.Allowed {
			t.Fatalf("Decide: allowed=%v, %v; want allowed", d.Allowed, err)
		}
	}
	wantCalls := func(want int64) {
		t.Helper()
		if got := primary.decides.Load(); got != want {
			t.Fatalf("primary called %d times, want %d", got, want)
		}
	}

	if s := lim.State(); !s.Healthy || s.Mode != "primary" || !s.Since.Equal(storetest.Start) {
		t.Errorf("initial State = %+v, want healthy on primary since Start", s)
	}
	// Two failures and a success: answered locally, the breaker stays
	// closed, nothing is logged.
	down.Store(true)
	decide()
	decide()
	down.Store(false)
	decide()
	wantCalls(3)
	if s := lim.State(); !s.Healthy || s.Failures != 2 || s.Transitions != 0 || !strings.Contains(s.LastError, "refused") {
		t.Errorf("after 2 failures: State = %+v, want healthy, 2 failures, no transition, last error kept", s)
	}

	// Three in a row open it.
	down.Store(true)
	for range 3 {
		decide()
	}
	wantCalls(6)
	tripped := clock.Now()
	s := lim.State()
	if s.Healthy || s.Mode != "fallback-local" || s.Transitions != 1 || s.Failures != 5 || !s.Since.Equal(tripped) {
		t.Errorf("after trip: State = %+v, want unhealthy, fallback-local, 1 transition, 5 failures", s)
	}
	want := "limiter: redis unavailable (" + errDown.Error() + "), failing local: deciding in-process until it returns"
	if l := log.get(); len(l) != 1 || l[0] != want {
		t.Fatalf("logged %q, want [%q]", l, want)
	}

	// Open: the primary is skipped until each probe is due.
	for range 10 {
		decide()
	}
	wantCalls(6)
	calls := int64(6)
	for _, wait := range []time.Duration{100, 200, 400, 800, 1600, 3200, 5000, 5000} {
		wait *= time.Millisecond
		clock.Advance(wait - time.Nanosecond)
		decide()
		wantCalls(calls)
		clock.Advance(time.Nanosecond)
		decide() // the probe, which fails
		calls++
		wantCalls(calls)
		decide()
		wantCalls(calls)
	}

	// The primary returns: the next probe closes the breaker.
	down.Store(false)
	clock.Advance(5 * time.Second)
	decide()
	decide()
	wantCalls(calls + 2)
	s = lim.State()
	if !s.Healthy || s.Mode != "primary" || s.Transitions != 2 || !s.Since.Equal(clock.Now()) {
		t.Errorf("after recovery: State = %+v, want healthy on primary, 2 transitions", s)
	}
	if l := log.get(); len(l) != 2 || l[1] != "limiter: redis is back after 21.3s, deciding on redis again" {
		t.Errorf("logged %q, want a second line saying redis is back after 21.3s", l)
	}

	// The backoff starts again from 100ms at the next outage.
	down.Store(true)
	for range 3 {
		decide()
	}
	clock.Advance(100 * time.Millisecond)
	decide()
	wantCalls(calls + 2 + 3 + 1)
	if l := log.get(); len(l) != 3 {
		t.Errorf("logged %d lines over 3 transitions, want 3: %q", len(l), l)
	}
}

// TestBreakerIgnoresCallerGoingAway checks that a caller that cancels
// its context neither counts as a failure nor gets a degraded answer.
func TestBreakerIgnoresCallerGoingAway(t *testing.T) {
	lim := limiter.New(hanging(), &limiter.Options{FailureMode: limiter.FailureOpen, TripAfter: 1, Timeout: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := lim.Decide(ctx, perMinute, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if s := lim.State(); !s.Healthy || s.Failures != 0 {
		t.Errorf("State = %+v, want healthy with no failure", s)
	}
}

// TestFailureLocalEnforces checks that the fallback enforces limits
// during an outage, seeds quotas from the ledger, records what it
// charges, and starts anew for the next outage.
func TestFailureLocalEnforces(t *testing.T) {
	clock := storetest.NewClock(storetest.Start)
	var down atomic.Bool
	down.Store(true)
	loads := 0
	led := &ledger{load: func(cs []limiter.Counter) ([]limiter.CounterValue, error) {
		loads++
		return make([]limiter.CounterValue, len(cs)), nil
	}}
	fb := &fallbacks{now: clock.Now}
	lim := limiter.New(switchable(clock.Now, &down), &limiter.Options{
		Ledger: led, Fallback: fb.New, Now: clock.Now, Logf: t.Logf,
	})

	admitted := 0
	for range 10 {
		d, err := lim.Decide(t.Context(), perMinute, 1)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			admitted++
		}
	}
	if admitted != 3 {
		t.Errorf("admitted %d during the outage, want 3", admitted)
	}

	quota := []limiter.Limit{{Name: "q", Key: "{user:a}q", Limit: 10, Period: daily}}
	led.load = func(cs []limiter.Counter) ([]limiter.CounterValue, error) {
		loads++
		return []limiter.CounterValue{{Used: 8, Seq: 20}}, nil
	}
	admitted = 0
	for range 5 {
		if d, err := lim.Decide(t.Context(), quota, 1); err != nil {
			t.Fatal(err)
		} else if d.Allowed {
			admitted++
		}
	}
	if admitted != 2 || loads != 1 {
		t.Errorf("admitted %d with %d ledger loads, want 2 (seeded 8 of 10) with 1", admitted, loads)
	}
	// Charges record 9 then 10; the three refusals record 10 again.
	if n := len(led.recorded); n != 5 || led.recorded[0].Used != 9 || led.recorded[4].Used != 10 || led.recorded[4].Seq != 22 {
		t.Errorf("recorded %+v, want used 9 then 10 (seq 21, 22), then 10 per refusal", led.recorded)
	}

	// Back on the primary, then, a minute later, a second outage: a new
	// fallback, seeded from the ledger again.
	down.Store(false)
	clock.Advance(time.Second)
	if _, err := lim.Decide(t.Context(), quota, 1); err != nil {
		t.Fatal(err)
	}
	if !lim.State().Healthy {
		t.Fatal("still unhealthy after a successful probe")
	}
	clock.Advance(time.Minute)
	before := fb.count()
	down.Store(true)
	if _, err := lim.Decide(t.Context(), quota, 1); err != nil {
		t.Fatal(err)
	}
	if fb.count() != before+1 || loads != 3 {
		t.Errorf("second outage: %d new fallbacks, %d ledger loads; want 1 new fallback, loads 3", fb.count()-before, loads)
	}
}

// TestFlappingPrimaryKeepsFallback checks that a primary failing every
// other decision, which never trips the breaker, does not meet each
// failure with an empty fallback: together the primary and the one
// fallback admit at most twice the limit, however many failures there
// are. A failure a minute after the last one starts a new fallback.
func TestFlappingPrimaryKeepsFallback(t *testing.T) {
	clock := storetest.NewClock(storetest.Start)
	var down atomic.Bool
	primary := switchable(clock.Now, &down)
	fb := &fallbacks{now: clock.Now}
	lim := limiter.New(primary, &limiter.Options{Fallback: fb.New, Now: clock.Now, Logf: t.Logf})
	admitted := 0
	for i := range 100 {
		down.Store(i%2 == 1)
		d, err := lim.Decide(t.Context(), perMinute, 1)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			admitted++
		}
		clock.Advance(time.Millisecond)
	}
	if admitted != 2*3 {
		t.Errorf("admitted %d of 100 in one window of limit 3, half of them decided by a fallback; want 6", admitted)
	}
	if !lim.State().Healthy {
		t.Error("breaker open after single failures")
	}
	before := fb.count()
	down.Store(false)
	clock.Advance(time.Minute)
	if _, err := lim.Decide(t.Context(), perMinute, 1); err != nil {
		t.Fatal(err)
	}
	down.Store(true)
	if _, err := lim.Decide(t.Context(), perMinute, 1); err != nil {
		t.Fatal(err)
	}
	if n := fb.count() - before; n != 1 {
		t.Errorf("a failure a minute after the last made %d new fallbacks, want 1", n)
	}
}

// TestRefundGoesToDecidingStore checks that a refund reaches the store
// that decided, and never waits for a dead primary.
func TestRefundGoesToDecidingStore(t *testing.T) {
	clock := storetest.NewClock(storetest.Start)
	var down atomic.Bool
	primary := switchable(clock.Now, &down)
	fb := &fallbacks{now: clock.Now}
	lim := limiter.New(primary, &limiter.Options{Fallback: fb.New, Now: clock.Now, TripAfter: 1, Logf: t.Logf})
	limits := []limiter.Limit{{Name: "q", Key: "q", Limit: 10, Period: daily, Refundable: true}}

	onPrimary, err := lim.Decide(t.Context(), limits, 1)
	if err != nil || !onPrimary.Allowed {
		t.Fatalf("Decide: %+v, %v", onPrimary, err)
	}
	if err := lim.Refund(t.Context(), &onPrimary, 1); err != nil || primary.refunds.Load() != 1 {
		t.Errorf("refund of a primary decision: %v, %d primary refunds; want nil, 1", err, primary.refunds.Load())
	}

	down.Store(true)
	local, err := lim.Decide(t.Context(), limits, 1)
	if err != nil || !local.Allowed || local.Statuses[0].Used != 1 {
		t.Fatalf("local Decide: %+v, %v", local, err)
	}
	if err := lim.Refund(t.Context(), &local, 1); err != nil {
		t.Errorf("refund of a local decision: %v", err)
	}
	if n, f := primary.refunds.Load(), fb.last().refunds.Load(); n != 1 || f != 1 {
		t.Errorf("refunds: primary %d, fallback %d; want 1, 1", n, f)
	}
	if d, _ := lim.Decide(t.Context(), limits, 0); d.Statuses[0].Used != 0 {
		t.Errorf("fallback usage after refund = %d, want 0", d.Statuses[0].Used)
	}

	// The breaker is open: a refund due to the primary fails at once.
	if err := lim.Refund(t.Context(), &onPrimary, 1); !errors.Is(err, limiter.ErrUnavailable) || primary.refunds.Load() != 1 {
		t.Errorf("refund while open: %v, %d primary refunds; want ErrUnavailable, 1", err, primary.refunds.Load())
	}
}

func TestRefundTimesOut(t *testing.T) {
	clock := storetest.NewClock(storetest.Start)
	ms := memstore.New(clock.Now)
	primary := hanging()
	primary.decide = ms.Decide
	primary.seed = ms.Seed
	lim := limiter.New(primary, &limiter.Options{Timeout: 10 * time.Millisecond, Now: clock.Now})
	limits := []limiter.Limit{{Name: "q", Key: "q", Limit: 10, Period: daily, Refundable: true}}
	d, err := lim.Decide(t.Context(), limits, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := lim.Refund(t.Context(), &d, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("refund to a hung primary: %v, want a deadline error", err)
	}
}

// TestFailoverConcurrent runs many decisions through an outage and a
// recovery; run it with -race.
func TestFailoverConcurrent(t *testing.T) {
	clock := storetest.NewClock(storetest.Start)
	var down atomic.Bool
	var log logs
	primary := switchable(clock.Now, &down)
	fb := &fallbacks{now: clock.Now}
	lim := limiter.New(primary, &limiter.Options{Fallback: fb.New, Now: clock.Now, Logf: log.logf})
	limits := []limiter.Limit{{Name: "r", Key: "r", Limit: 100, Window: time.Minute}}

	run := func() (admitted int64) {
		var wg sync.WaitGroup
		var n atomic.Int64
		for range 64 {
			wg.Go(func() {
				for range 50 {
					d, err := lim.Decide(t.Context(), limits, 1)
					if err != nil {
						t.Error(err)
						return
					}
					if d.Allowed {
						n.Add(1)
					}
					_ = lim.State()
				}
			})
		}
		wg.Wait()
		return n.Load()
	}

	down.Store(true)
	if n := run(); n != 100 {
		t.Errorf("admitted %d during the outage, want exactly 100", n)
	}
	if s := lim.State(); s.Healthy || s.Transitions != 1 {
		t.Errorf("State = %+v, want unhealthy after 1 transition", s)
	}
	if c := primary.decides.Load(); c < 3 || c > 3+64 {
		t.Errorf("primary called %d times during the outage, want 3 before the trip and at most one more in flight per goroutine", c)
	}

	down.Store(false)
	clock.Advance(time.Second)
	run()
	if s := lim.State(); !s.Healthy || s.Transitions != 2 {
		t.Errorf("State = %+v, want healthy after 2 transitions", s)
	}
	if l := log.get(); len(l) != 2 {
		t.Errorf("logged %d lines for 2 transitions: %q", len(l), l)
	}
}

// TestResetWhileDown: a reset goes where decisions go: to the local
// fallback while the breaker is open in FailureLocal mode, nowhere in
// the other modes.
func TestResetWhileDown(t *testing.T) {
	for _, mode := range []limiter.FailureMode{limiter.FailureLocal, limiter.FailureOpen, limiter.FailureClosed} {
		t.Run(mode.String(), func(t *testing.T) {
			fb := &fallbacks{}
			lim := limiter.New(failing(errDown), &limiter.Options{FailureMode: mode, Fallback: fb.New, TripAfter: 1, Backoff: time.Hour, Logf: t.Logf})
			lim.Decide(t.Context(), perMinute, 1) // opens the breaker
			if d, _ := lim.Decide(t.Context(), perMinute, 1); mode == limiter.FailureLocal && d.Statuses[0].Used != 2 {
				t.Fatalf("the fallback counts %d, want 2", d.Statuses[0].Used)
			}
			err := lim.Reset(t.Context(), perMinute)
			if mode != limiter.FailureLocal {
				if !errors.Is(err, limiter.ErrUnavailable) {
					t.Errorf("Reset = %v, want ErrUnavailable", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d, err := lim.Decide(t.Context(), perMinute, 0); err != nil || d.Statuses[0].Used != 0 {
				t.Errorf("after Reset: %+v, %v, want the fallback's window empty", d.Statuses, err)
			}
		})
	}
}

// TestDecisionsShareBound checks the context that bounds a decision:
// decisions starting close together share one, which ends within the
// timeout and not before fifteen sixteenths of it; a caller whose own
// deadline comes first, or whose context has ended, keeps its own.
func TestDecisionsShareBound(t *testing.T) {
	var seen []context.Context
	store := &fake{decide: func(ctx context.Context, limits []limiter.Limit, cost int64) (limiter.Decision, error) {
		seen = append(seen, ctx)
		return limiter.Decision{Allowed: true, Statuses: make([]limiter.Status, len(limits))}, nil
	}}
	decide := func(lim *limiter.Limiter, ctx context.Context) context.Context {
		t.Helper()
		n := len(seen)
		if _, err := lim.Decide(ctx, perMinute, 1); err != nil && ctx.Err() == nil {
			t.Fatal(err)
		}
		if len(seen) != n+1 {
			t.Fatalf("the store decided %d times, want once", len(seen)-n)
		}
		return seen[n]
	}

	const timeout = time.Hour
	lim := limiter.New(store, &limiter.Options{Timeout: timeout})
	before := time.Now()
	a, b := decide(lim, t.Context()), decide(lim, context.Background())
	after := time.Now()
	if a != b {
		t.Error("two decisions a moment apart got contexts of their own, want one shared")
	}
	dl, ok := a.Deadline()
	if !ok || dl.Before(before.Add(timeout-timeout/16)) || dl.After(after.Add(timeout)) {
		t.Errorf("shared deadline %v (set: %v), want within [%v, %v]", dl, ok, before.Add(timeout-timeout/16), after.Add(timeout))
	}

	soon, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if c := decide(lim, soon); c == a {
		t.Error("a caller with a one-minute deadline got the shared one-hour bound")
	} else if dl, _ := c.Deadline(); dl.After(after.Add(time.Minute + time.Second)) {
		t.Errorf("caller's deadline in a minute, the decision's at %v", dl)
	}
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	if c := decide(lim, gone); c.Err() == nil {
		t.Error("a caller whose context ended decided with a live one")
	}

	// With a slot of 1ms, decisions 2ms apart start in slots of their own.
	lim = limiter.New(store, &limiter.Options{Timeout: 16 * time.Millisecond})
	first := decide(lim, t.Context())
	time.Sleep(2 * time.Millisecond)
	if decide(lim, t.Context()) == first {
		t.Error("decisions a slot apart share a bound")
	}
}

// pingable is a fake primary that also answers pings, failing them
// while down is set, and counts them.
type pingable struct {
	*fake
	down  *atomic.Bool
	pings atomic.Int64
	ping  func(ctx context.Context) error // when set, answers pings instead
}

func (p *pingable) Ping(ctx context.Context) error {
	p.pings.Add(1)
	if p.ping != nil {
		return p.ping(ctx)
	}
	if p.down.Load() {
		return errDown
	}
	return nil
}

// TestCheckFollowsPrimary: a health check looks at the primary with no
// decision going through. Closed, a failed ping is reported and counts
// against the breaker, a good one leaves a run of failed decisions
// standing; open, a due probe (a decision of the check's own) closes
// the breaker when the primary is back. It looks at most once a second.
func TestCheckFollowsPrimary(t *testing.T) {
	clock := storetest.NewClock(storetest.Start)
	var down atomic.Bool
	primary := &pingable{fake: switchable(clock.Now, &down), down: &down}
	fb := &fallbacks{now: clock.Now}
	lim := limiter.New(primary, &limiter.Options{Name: "redis", FailureMode: limiter.FailureClosed, Fallback: fb.New, Now: clock.Now, Logf: t.Logf})
	check := func() (limiter.State, error) {
		t.Helper()
		clock.Advance(time.Second)
		return lim.Check(t.Context())
	}

	if s, err := check(); !s.Healthy || err != nil || primary.pings.Load() != 1 || primary.decides.Load() != 0 {
		t.Fatalf("up: State %+v, %v, %d pings, %d decisions; want healthy, one ping, no decision", s, err, primary.pings.Load(), primary.decides.Load())
	}
	// Within a second the last look stands.
	clock.Advance(999 * time.Millisecond)
	if _, err := lim.Check(t.Context()); err != nil || primary.pings.Load() != 1 {
		t.Fatalf("a second look within a second: %v, %d pings; want the last result, 1 ping", err, primary.pings.Load())
	}

	// Redis goes away with no requests: the first check says so, the
	// third opens the breaker.
	down.Store(true)
	if s, err := check(); !s.Healthy || !errors.Is(err, errDown) {
		t.Fatalf("first check while down: State %+v, %v; want still deciding on the primary, the ping's error", s, err)
	}
	check()
	if s, _ := check(); s.Healthy || s.Mode != "closed" {
		t.Fatalf("third failed check: State %+v, want the breaker open, closed", s)
	}

	// Back: a due probe, made by the check itself, closes it.
	down.Store(false)
	clock.Advance(5 * time.Second)
	before := primary.decides.Load()
	if s, err := check(); !s.Healthy || err != nil || primary.decides.Load() != before+1 {
		t.Fatalf("after Redis returned: State %+v, %v, %d probe decisions; want healthy after one", s, err, primary.decides.Load()-before)
	}

	// A good ping does not clear a run of failed decisions: two fail,
	// a check passes, the third failed decision still opens the breaker.
	down.Store(true)
	limits := []limiter.Limit{{Name: "r", Key: "r", Limit: 10, Window: time.Second}}
	lim.Decide(t.Context(), limits, 1)
	lim.Decide(t.Context(), limits, 1)
	down.Store(false)
	check()
	down.Store(true)
	lim.Decide(t.Context(), limits, 1)
	if s := lim.State(); s.Healthy {
		t.Errorf("three failed decisions around a good ping: State %+v, want the breaker open", s)
	}
}

// TestCheckCallerLeaving: a health check whose caller leaves during its
// look says nothing about the store, and its cancelled ping does not
// stand as the next callers' answer.
func TestCheckCallerLeaving(t *testing.T) {
	clock := storetest.NewClock(storetest.Start)
	var down atomic.Bool
	primary := &pingable{fake: switchable(clock.Now, &down), down: &down}
	lim := limiter.New(primary, &limiter.Options{Name: "redis", FailureMode: limiter.FailureClosed, Now: clock.Now, Logf: t.Logf})
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	primary.ping = func(ctx context.Context) error { return ctx.Err() }
	if s, err := lim.Check(gone); !s.Healthy || err != nil {
		t.Fatalf("a caller that left: State %+v, %v; want healthy, no error", s, err)
	}
	primary.ping = nil
	clock.Advance(500 * time.Millisecond)
	if s, err := lim.Check(t.Context()); !s.Healthy || err != nil {
		t.Fatalf("the next caller, within the second: State %+v, %v; want healthy, no error", s, err)
	}
}
