package limiter_test

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// fakeClock is a settable clock.
type fakeClock struct{ t atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.t.Store(time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) now() time.Time      { return time.Unix(0, c.t.Load()).UTC() }
func (c *fakeClock) add(d time.Duration) { c.t.Add(int64(d)) }
func holding(c *fakeClock, hold time.Duration, store limiter.Store) *limiter.Limiter {
	return limiter.New(store, &limiter.Options{Now: c.now, Timeout: -1, HoldRefusals: hold})
}

// TestHoldRefusals: a refused request is refused again without the store
// while its limit is full, for at most the hold, and only for the same
// limits and at least the same cost.
func TestHoldRefusals(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	var down atomic.Bool
	store := switchable(clock.now, &down)
	lim := holding(clock, 300*time.Millisecond, store)
	limits := []limiter.Limit{
		{Name: "r", Key: "{k}r", Limit: 3, Window: time.Second},
		{Name: "q", Key: "{k}q", Limit: 100, Period: daily},
	}
	decide := func(limits []limiter.Limit, cost int64) limiter.Decision {
		t.Helper()
		d, err := lim.Decide(ctx, limits, cost)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for range 3 {
		if !decide(limits, 1).Allowed {
			t.Fatal("refused under the limit")
		}
	}
	// The first decision also seeded the quota: count from here.
	base := store.decides.Load()
	decides := func() int64 { return store.decides.Load() - base }
	first := decide(limits, 2)
	if first.Allowed || decides() != 1 {
		t.Fatalf("allowed %v after %d store decisions; want a refusal by the store", first.Allowed, decides())
	}
	clock.add(100 * time.Millisecond)
	d := decide(limits, 3)
	if d.Allowed || decides() != 1 {
		t.Fatalf("allowed %v after %d store decisions; want a held refusal", d.Allowed, decides())
	}
	if r := d.Refused(); r == nil || r.Limit.Name != "r" || r.RetryAfter != first.Refused().RetryAfter-100*time.Millisecond {
		t.Errorf("held refusal %+v; want limit r, retry 100ms sooner than %v", r, first.Refused().RetryAfter)
	}
	if got := lim.State().HeldRefusals; got != 1 {
		t.Errorf("HeldRefusals = %d, want 1", got)
	}
	// A smaller cost, or other limits on the same key, go to the store.
	decide(limits, 1) // refused, and held from now
	if decides() != 2 {
		t.Errorf("a smaller cost was held: %d store decisions, want 2", decides())
	}
	decide(limits[:1], 2)
	if decides() != 3 {
		t.Errorf("other limits were held: %d store decisions, want 3", decides())
	}
	raised := []limiter.Limit{{Name: "r", Key: "{k}r", Limit: 4, Window: time.Second}, limits[1]}
	if !decide(raised, 1).Allowed || decides() != 4 {
		t.Errorf("a raised limit did not reach the store (%d decisions)", decides())
	}
	// Past the hold the store decides again, and refuses: still full.
	clock.add(350 * time.Millisecond)
	if decide(limits, 1).Allowed || decides() != 5 {
		t.Errorf("after the hold: %d store decisions, want 5", decides())
	}
	// A reset forgets what is held.
	if err := lim.Reset(ctx, limits); err != nil {
		t.Fatal(err)
	}
	if !decide(limits, 1).Allowed {
		t.Error("refused after a reset: a refusal was held across it")
	}
}

// TestHoldRefusalsExact runs the same random requests through a Limiter
// that holds refusals and one that does not, each on its own store with
// one clock: every answer must be the same, so holding never refuses what
// the store would admit, nor admits anything.
func TestHoldRefusalsExact(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		clock := newFakeClock()
		var down atomic.Bool
		held := holding(clock, time.Duration(1+rng.IntN(800))*time.Millisecond, switchable(clock.now, &down))
		plain := holding(clock, 0, switchable(clock.now, &down))
		// Two routes of one subject: they share its windows and quota,
		// and the second adds a route limit of its own.
		q := limiter.Limit{Name: "q", Key: "{k}q", Limit: 400, Period: daily}
		r1 := limiter.Limit{Name: "r1", Key: "{k}r1", Limit: 8, Window: time.Second}
		r2 := limiter.Limit{Name: "r2", Key: "{k}r2", Limit: 20, Window: 5 * time.Second}
		route := limiter.Limit{Name: "route", Key: "{g}route", Limit: 3, Window: time.Second, PerRequest: true}
		sets := [][]limiter.Limit{{r1, r2, q}, {r1, r2, q, route}}
		for i := range 3000 {
			limits, cost := sets[rng.IntN(2)], int64(1+rng.IntN(3))
			a, err := held.Decide(ctx, limits, cost)
			if err != nil {
				t.Fatal(err)
			}
			b, err := plain.Decide(ctx, limits, cost)
			if err != nil {
				t.Fatal(err)
			}
			if a.Allowed != b.Allowed {
				t.Fatalf("seed %d, request %d (cost %d, %d limits): holding answered allowed=%v, the store %v", seed, i, cost, len(limits), a.Allowed, b.Allowed)
			}
			if !a.Allowed && a.Refused() == nil {
				t.Fatalf("seed %d, request %d: a refusal without a refusing limit", seed, i)
			}
			if rng.IntN(50) == 0 {
				if err := held.Reset(ctx, limits); err != nil {
					t.Fatal(err)
				}
				if err := plain.Reset(ctx, limits); err != nil {
					t.Fatal(err)
				}
			}
			clock.add(time.Duration(rng.IntN(60)) * time.Millisecond)
		}
		if held.State().HeldRefusals == 0 {
			t.Errorf("seed %d: nothing was held; the test shows nothing", seed)
		}
	}
}
