package storetest

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// fixedWindow is a deliberately broken store: a fixed-window counter,
// which admits up to twice the limit around a window boundary.
type fixedWindow struct {
	clock *Clock
	used  map[string][2]int64 // window number, usage
}

func (f *fixedWindow) Decide(_ context.Context, limits []limiter.Limit, cost int64) (limiter.Decision, error) {
	now := f.clock.Now().UnixNano()
	d := limiter.Decision{Allowed: true, Statuses: make([]limiter.Status, len(limits))}
	for i, l := range limits {
		n := now / l.Window.Nanoseconds()
		if u := f.used[l.Key]; u[0] == n {
			d.Statuses[i].Used = u[1]
		}
		if d.Statuses[i].Used+cost > l.Limit {
			d.Allowed, d.Statuses[i].Exceeded = false, true
		}
	}
	for i, l := range limits {
		if d.Allowed {
			d.Statuses[i].Used += cost
			f.used[l.Key] = [2]int64{now / l.Window.Nanoseconds(), d.Statuses[i].Used}
		}
	}
	return d, nil
}

func (f *fixedWindow) Seed(context.Context, []limiter.CounterValue) error { return nil }

func (f *fixedWindow) Refund(context.Context, []limiter.Counter, int64) ([]limiter.CounterValue, error) {
	return nil, nil
}

func (f *fixedWindow) Reset(context.Context, []limiter.Limit) ([]limiter.CounterValue, error) {
	return nil, nil
}

// TestPropertyCatchesFixedWindow shows that the property test can fail:
// the arrival patterns find the double burst of a fixed window.
func TestPropertyCatchesFixedWindow(t *testing.T) {
	clock := NewClock(Start)
	s := &fixedWindow{clock: clock, used: map[string][2]int64{}}
	l := limiter.Limit{Name: "fixed", Key: "k", Limit: 10, Window: time.Second}
	reqs := arrivals(rand.New(rand.NewPCG(1, 2)), Start.UnixMicro(), []limiter.Limit{l}, (30 * time.Second).Microseconds(), 1)
	adm, err := simulate(t.Context(), s, clock, []limiter.Limit{l}, reqs, false)
	if err != nil {
		t.Fatal(err)
	}
	err = checkAnyInterval(adm, l)
	if err == nil {
		t.Fatal("checkAnyInterval found no violation in a fixed-window store")
	}
	t.Logf("caught: %v", err)
	if _, err := simulate(t.Context(), &fixedWindow{clock: clock, used: map[string][2]int64{}}, clock, []limiter.Limit{l}, reqs, true); err == nil {
		t.Error("the reference model agreed with a fixed-window store")
	}
}

func TestCheckAnyInterval(t *testing.T) {
	l := limiter.Limit{Name: "l", Limit: 3, Window: time.Second}
	s := int64(time.Second / time.Microsecond)
	tests := []struct {
		name string
		adm  []admission
		ok   bool
	}{
		{"empty", nil, true},
		{"at the limit", []admission{{0, 1}, {0, 2}}, true},
		{"over at one instant", []admission{{0, 2}, {0, 2}}, false},
		{"one window apart is inside the closed interval", []admission{{0, 2}, {s, 2}}, false},
		{"just over one window apart", []admission{{0, 2}, {s + 1, 2}}, true},
		{"sliding", []admission{{0, 1}, {s / 2, 1}, {s, 1}, {s + 1, 1}, {3*s/2 + 1, 1}}, true},
		{"sliding over", []admission{{0, 1}, {s / 2, 1}, {s / 2, 1}, {s, 1}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkAnyInterval(tc.adm, l)
			if (err == nil) != tc.ok {
				t.Errorf("checkAnyInterval = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

func TestClock(t *testing.T) {
	c := NewClock(Start)
	if got := c.Advance(time.Second); !got.Equal(Start.Add(time.Second)) || !c.Now().Equal(got) {
		t.Errorf("Advance = %v, Now = %v, want %v", got, c.Now(), Start.Add(time.Second))
	}
	c.Set(Start)
	if !c.Now().Equal(Start) {
		t.Errorf("after Set: Now = %v, want %v", c.Now(), Start)
	}
}
