package redisstore

import (
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// TestClockFarOff: a replica whose clock is hours off lists quota periods
// around the Redis clock, as Warm and each decision read it, so it
// charges the hour Redis is in. Before, it listed the periods around its
// own clock, and the script charged the hour that clock named.
func TestClockFarOff(t *testing.T) {
	for _, off := range []time.Duration{-3 * time.Hour, 5 * time.Hour} {
		t.Run(off.String(), func(t *testing.T) {
			ctx := t.Context()
			// An hour about to turn would leave the test unsure which hour Redis is in.
			if now := time.Now(); now.Add(5*time.Second).Truncate(time.Hour) != now.Truncate(time.Hour) {
				time.Sleep(6 * time.Second)
			}
			s := New(testenv.Redis(t), &Options{Prefix: testenv.Prefix(t), Clock: func() time.Time { return time.Now().Add(off) }})
			defer s.Close()
			if err := s.Warm(ctx); err != nil {
				t.Fatal(err)
			}
			lim := []limiter.Limit{{Name: "q", Key: "{u}u/qhourly", Limit: 5, Period: hourly}}
			d, err := s.Decide(ctx, lim, 0)
			if err != nil {
				t.Fatal(err)
			}
			want := time.Now().UTC().Truncate(time.Hour) // Redis runs on this machine's clock
			if got := d.Statuses[0].Counter.Start; !got.Equal(want) {
				t.Errorf("a replica %v off charges the period starting %v, want %v (the Redis clock's hour)", off, got.UTC(), want)
			}

			// Without Warm (Redis away at start), a decision's reply
			// teaches the skew: the next decision is right.
			cold := New(testenv.Redis(t), &Options{Prefix: testenv.Prefix(t), Clock: func() time.Time { return time.Now().Add(off) }})
			defer cold.Close()
			if _, err := cold.Decide(ctx, lim, 0); err != nil {
				t.Fatal(err)
			}
			d, err = cold.Decide(ctx, lim, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := d.Statuses[0].Counter.Start; !got.Equal(want) {
				t.Errorf("without Warm, after one decision, a replica %v off charges the period starting %v, want %v", off, got.UTC(), want)
			}
		})
	}
}
