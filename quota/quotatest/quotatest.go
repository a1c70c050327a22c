// Package quotatest is the contract every quota.Store passes: boltstore
// always, pgstore when a test database is configured.
package quotatest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// RunStore runs the quota.Store contract. newStore returns an empty store
// for one subtest and registers its cleanup with t.
func RunStore(t *testing.T, newStore func(t *testing.T) quota.Store) {
	ctx := context.Background()
	day := time.Date(2026, 3, 8, 5, 0, 0, 0, time.UTC)
	a := limiter.Counter{Key: "{user:alice}:q:daily", Start: day}
	b := limiter.Counter{Key: "{user:alice}:q:monthly", Start: day}
	a2 := limiter.Counter{Key: a.Key, Start: day.Add(24 * time.Hour)}
	prefix := limiter.Counter{Key: "{user:alice}:q:d", Start: day} // a prefix of a.Key
	val := func(c limiter.Counter, used, seq int64) limiter.CounterValue {
		return limiter.CounterValue{Counter: c, Used: used, Seq: seq}
	}
	load := func(t *testing.T, s quota.Store, cs ...limiter.Counter) []limiter.CounterValue {
		t.Helper()
		got, err := s.Load(ctx, cs)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if len(got) != len(cs) {
			t.Fatalf("Load returned %d values for %d counters", len(got), len(cs))
		}
		return got
	}
	write := func(t *testing.T, s quota.Store, vs ...limiter.CounterValue) {
		t.Helper()
		if err := s.Write(ctx, vs); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	check := func(t *testing.T, got []limiter.CounterValue, want ...limiter.CounterValue) {
		t.Helper()
		for i := range want {
			g, w := got[i], want[i]
			if g.Key != w.Key || !g.Start.Equal(w.Start) || g.Used != w.Used || g.Seq != w.Seq {
				t.Errorf("value %d: got %s, want %s", i, show(g), show(w))
			}
		}
	}

	t.Run("UnknownLoadsZero", func(t *testing.T) {
		s := newStore(t)
		check(t, load(t, s, a, b), val(a, 0, 0), val(b, 0, 0))
		if got := load(t, s); len(got) != 0 {
			t.Errorf("Load(nil): got %d values, want 0", len(got))
		}
		write(t, s) // an empty batch is fine
	})
	t.Run("WriteLoad", func(t *testing.T) {
		s := newStore(t)
		write(t, s, val(a, 10, 3), val(b, 20, 4), val(a2, 30, 5), val(prefix, 40, 6))
		check(t, load(t, s, b, a2, a, prefix), val(b, 20, 4), val(a2, 30, 5), val(a, 10, 3), val(prefix, 40, 6))
	})
	t.Run("StartIdentifiesToTheSecond", func(t *testing.T) {
		s := newStore(t)
		write(t, s, val(a, 10, 3))
		ny := time.FixedZone("EST", -5*3600)
		same := limiter.Counter{Key: a.Key, Start: a.Start.In(ny)}
		got := load(t, s, same)
		check(t, got, val(same, 10, 3))
		if got[0].Start.Location() != ny {
			t.Errorf("Load changed the Counter: got %v, want %v", got[0].Start, same.Start)
		}
	})
	t.Run("HighestSeqWins", func(t *testing.T) {
		s := newStore(t)
		write(t, s, val(a, 50, 5))
		write(t, s, val(a, 30, 3)) // late, older
		write(t, s, val(b, 7, 7), val(b, 6, 6), val(b, 8, 8), val(b, 1, 1))
		write(t, s, val(a2, 9, 9), val(a2, 9, 9)) // replayed
		write(t, s, val(a2, 9, 9))
		check(t, load(t, s, a, b, a2), val(a, 50, 5), val(b, 8, 8), val(a2, 9, 9))
		write(t, s, val(a, 49, 6)) // a refund: a newer, smaller value
		check(t, load(t, s, a), val(a, 49, 6))
	})
	t.Run("ConcurrentWritesKeepHighestSeq", func(t *testing.T) {
		s := newStore(t)
		const writers, per = 8, 25
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				for i := range per {
					seq := int64(i*writers + w + 1) // every seq once, interleaved
					if err := s.Write(ctx, []limiter.CounterValue{val(a, seq*10, seq), val(b, seq, seq)}); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("Write: %v", err)
		}
		const top = writers * per
		check(t, load(t, s, a, b), val(a, top*10, top), val(b, top, top))
	})
	t.Run("CanceledContext", func(t *testing.T) {
		s := newStore(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Write(cctx, []limiter.CounterValue{val(a, 1, 1)}); err == nil {
			t.Error("Write with a canceled context: got nil error")
		}
		if _, err := s.Load(cctx, []limiter.Counter{a}); err == nil {
			t.Error("Load with a canceled context: got nil error")
		}
	})
}

func show(v limiter.CounterValue) string {
	return fmt.Sprintf("%q@%s used=%d seq=%d", v.Key, v.Start.UTC().Format(time.RFC3339), v.Used, v.Seq)
}
