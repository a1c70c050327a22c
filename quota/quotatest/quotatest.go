// Package quotatest is the contract the durable stores pass: boltstore
// always, pgstore when a test database is configured. RunStore checks
// the quota ledger, RunPeriodUsage its listing of current periods,
// RunJournal violations and roll-ups, RunRules runtime rules and
// RunAudit the audit log.
package quotatest

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
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
	write := func(t *testing.T, s quota.Store, vs ...limiter.CounterValue) []limiter.CounterValue {
		t.Helper()
		ahead, err := s.Write(ctx, vs)
		if err != nil {
			t.Fatalf("Write: %v", err)
		}
		return ahead
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
	t.Run("ReportsWhatItHoldsAhead", func(t *testing.T) {
		s := newStore(t)
		if ahead := write(t, s, val(a, 50, 5), val(b, 7, 7), val(a2, 9, 9)); len(ahead) != 0 {
			t.Errorf("first write: got %d values ahead, want none", len(ahead))
		}
		// Within one batch only the highest value of a counter is
		// written; the others are not the store's to report. A value
		// written again is not ahead of itself.
		if ahead := write(t, s, val(b, 8, 8), val(b, 6, 6), val(a2, 9, 9)); len(ahead) != 0 {
			t.Errorf("write of newer and equal values: got %d values ahead, want none: %v", len(ahead), ahead)
		}
		ny := time.FixedZone("EST", -5*3600)
		older := limiter.Counter{Key: a.Key, Start: a.Start.In(ny)}
		ahead := write(t, s,
			val(older, 30, 3),  // older than the stored (50, 5)
			val(b, 6, 8),       // the same Seq, other usage: a history that forked
			val(a2, 11, 10),    // newer: taken
			val(prefix, 40, 6)) // new: taken
		slices.SortFunc(ahead, func(x, y limiter.CounterValue) int { return strings.Compare(x.Key, y.Key) })
		if len(ahead) != 2 {
			t.Fatalf("got %d values ahead, want 2 (a and b): %v", len(ahead), ahead)
		}
		check(t, ahead, val(a, 50, 5), val(b, 8, 8))
		check(t, load(t, s, a, b, a2, prefix), val(a, 50, 5), val(b, 8, 8), val(a2, 11, 10), val(prefix, 40, 6))
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
					if _, err := s.Write(ctx, []limiter.CounterValue{val(a, seq*10, seq), val(b, seq, seq)}); err != nil {
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
		if _, err := s.Write(cctx, []limiter.CounterValue{val(a, 1, 1)}); err == nil {
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

// PeriodUsage is what RunPeriodUsage tests: a quota.Store that lists
// the counters of given periods.
type PeriodUsage interface {
	quota.Store
	PeriodUsage(ctx context.Context, starts []time.Time) ([]limiter.CounterValue, error)
}

// RunPeriodUsage runs the contract of PeriodUsage: every counter whose
// period started at one of starts (to the second, whatever the
// Location), however many there are, and no other; in any order. No
// starts list none. newStore returns an empty store for one subtest and
// registers its cleanup with t.
func RunPeriodUsage(t *testing.T, newStore func(t *testing.T) PeriodUsage) {
	ctx := context.Background()
	s := newStore(t)
	month := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	day := time.Date(2026, 3, 8, 0, 0, 0, 0, time.UTC)
	val := func(key string, start time.Time, used int64) limiter.CounterValue {
		return limiter.CounterValue{Counter: limiter.Counter{Key: key, Start: start}, Used: used, Seq: used + 1}
	}
	values := []limiter.CounterValue{
		val("{user:alice}user:alice/qmonthly", month, 500),
		val("{user:alice}user:alice/qdaily", day, 40),
		val("{user:alice}user:alice/qdaily", day.AddDate(0, 0, -1), 90),    // an earlier day
		val("{user:alice}user:alice/qdaily", month, 70),                    // the month's first day
		val("{user:bob}user:bob/qdaily", day.AddDate(0, -1, 0), 9999),      // last month
		val("{user:bob}user:bob/qmonthly", month.AddDate(0, -1, 0), 12345), // last month
		val("{key:B}key:B/qdaily", day, 0),                                 // used up to 0 by a reset
	}
	// More counters of the day than any page or ranking bound: all of
	// them are listed.
	const many = 2500
	for i := range many {
		values = append(values, val(fmt.Sprintf("{ip:10.0.%d.%d}ip:10.0.%d.%d/qdaily", i/256, i%256, i/256, i%256), day, int64(1+i%7)))
	}
	if _, err := s.Write(ctx, values); err != nil {
		t.Fatal(err)
	}
	check := func(name string, starts []time.Time, want []limiter.CounterValue) {
		t.Helper()
		got, err := s.PeriodUsage(ctx, starts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		order := func(a, b limiter.CounterValue) int {
			return cmp.Or(strings.Compare(a.Key, b.Key), a.Start.Compare(b.Start))
		}
		slices.SortFunc(got, order)
		want = slices.SortedFunc(slices.Values(want), order)
		if len(got) != len(want) {
			t.Fatalf("%s: got %d values, want %d", name, len(got), len(want))
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.Key != w.Key || !g.Start.Equal(w.Start) || g.Used != w.Used || g.Seq != w.Seq {
				t.Errorf("%s: value %d: got %s, want %s", name, i, show(g), show(w))
			}
		}
	}
	check("no starts", nil, nil)
	check("the month", []time.Time{month}, []limiter.CounterValue{values[0], values[3]})
	ofDay := append([]limiter.CounterValue{values[1], values[6]}, values[7:]...)
	// A start in another Location, with a fraction of a second, names
	// the same second.
	tokyo := time.FixedZone("JST", 9*3600)
	check("the day and the month", []time.Time{day.In(tokyo).Add(400 * time.Millisecond), month},
		append([]limiter.CounterValue{values[0], values[3]}, ofDay...))
	check("a start without counters", []time.Time{day.AddDate(0, 0, 1)}, nil)
}

// Prune is a quota.Store that deletes the usage of old periods.
type Prune interface {
	quota.Store
	Prune(ctx context.Context, before time.Time) (int, error)
}

// RunPrune checks that Prune deletes exactly the periods that started
// before its cutoff.
func RunPrune(t *testing.T, newStore func(t *testing.T) Prune) {
	ctx := context.Background()
	s := newStore(t)
	jan := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	feb := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	mar := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var counters []limiter.Counter
	var values []limiter.CounterValue
	for _, key := range []string{"{user:a}:q:monthly", "{user:b}:q:monthly"} {
		for _, start := range []time.Time{jan, feb, mar} {
			c := limiter.Counter{Key: key, Start: start}
			counters = append(counters, c)
			values = append(values, limiter.CounterValue{Counter: c, Used: 1, Seq: 1})
		}
	}
	if _, err := s.Write(ctx, values); err != nil {
		t.Fatal(err)
	}
	n, err := s.Prune(ctx, mar)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("Prune: got %d deleted, want 4", n)
	}
	got, err := s.Load(ctx, counters)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range got {
		if kept := v.Seq == 1; kept != !v.Start.Before(mar) {
			t.Errorf("%s %s: kept=%v, want %v", v.Key, v.Start.Format("2006-01"), kept, !kept)
		}
	}
	if n, err := s.Prune(ctx, mar); err != nil || n != 0 {
		t.Errorf("second Prune: got %d, %v, want 0, nil", n, err)
	}
}
