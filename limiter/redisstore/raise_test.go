package redisstore

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
	"github.com/gaia-proxy/gaia-proxy/quota/boltstore"
)

// TestRaise checks quota.Raiser's rule on counters in several slots: a
// counter behind the ledger (lower seq, or the same seq with other
// usage) takes the larger usage and a seq above both; one ahead of the
// ledger value, or missing, is left alone; raising again changes
// nothing.
func TestRaise(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := b.newStore(t, nil, nil)
			ctx := t.Context()
			quota := func(user string) []limiter.Limit {
				return []limiter.Limit{{Name: "q", Key: "{user:" + user + "}user:" + user + "/qhourly", Limit: 1000, Period: hourly}}
			}
			counter := func(user string) limiter.Counter {
				t.Helper()
				d, err := s.Decide(ctx, quota(user), 0)
				if err != nil {
					t.Fatal(err)
				}
				return d.Statuses[0].Counter
			}
			read := func(user string) (used, seq int64) {
				t.Helper()
				d, err := s.Decide(ctx, quota(user), 1)
				if err != nil || len(d.Missing) != 0 || !d.Allowed {
					t.Fatalf("Decide(%s) = %+v, %v", user, d, err)
				}
				return d.Statuses[0].Used - 1, d.Statuses[0].Seq - 1 // before this charge
			}
			val := func(c limiter.Counter, used, seq int64) limiter.CounterValue {
				return limiter.CounterValue{Counter: c, Used: used, Seq: seq}
			}
			behind, forked, ahead, missing := counter("behind"), counter("forked"), counter("ahead"), counter("missing")
			if err := s.Seed(ctx, []limiter.CounterValue{val(behind, 10, 10), val(forked, 5, 5), val(ahead, 7, 7)}); err != nil {
				t.Fatal(err)
			}
			ledger := []limiter.CounterValue{
				val(behind, 15, 20), // Redis went back: seq 10 < 20
				val(forked, 3, 5),   // the same seq, other usage
				val(ahead, 4, 3),    // merely an older value than Redis's
				val(missing, 9, 9),  // not held: the next decision seeds it
			}
			raised, err := s.Raise(ctx, ledger)
			if err != nil {
				t.Fatal(err)
			}
			want := []limiter.CounterValue{val(behind, 15, 21), val(forked, 5, 6)}
			if len(raised) != len(want) {
				t.Fatalf("Raise returned %+v, want %+v", raised, want)
			}
			for i, w := range want {
				if g := raised[i]; !g.Is(w.Counter) || g.Used != w.Used || g.Seq != w.Seq {
					t.Errorf("raised[%d] = %+v, want %+v", i, g, w)
				}
			}
			for user, w := range map[string][2]int64{"behind": {15, 21}, "forked": {5, 6}, "ahead": {7, 7}} {
				if used, seq := read(user); used != w[0] || seq != w[1] {
					t.Errorf("%s after Raise: used %d seq %d, want %d, %d", user, used, seq, w[0], w[1])
				}
			}
			if d, err := s.Decide(ctx, quota("missing"), 0); err != nil || len(d.Missing) != 1 {
				t.Errorf("a counter Redis does not hold: Decide = %+v, %v; want it still missing", d, err)
			}
			// Again, as a retry after a lost reply would: every counter
			// is now at or past the ledger.
			if again, err := s.Raise(ctx, ledger); err != nil || len(again) != 0 {
				t.Errorf("Raise again = %+v, %v; want nothing raised", again, err)
			}
		})
	}
}

// TestResetOutranksLedger: an admin reset while Redis is behind the
// ledger (here the ledger holds 60 at seq 40, Redis 5 at seq 5) stays a
// reset. Its zero reaches the ledger with a seq above the ledger's, so
// the ledger takes it and does not have Redis raised back to 60; Redis's
// next charge, behind the zero, is raised to it and counts on from 0.
func TestResetOutranksLedger(t *testing.T) {
	ctx := t.Context()
	s := New(testenv.Redis(t), &Options{Prefix: testenv.Prefix(t)})
	defer s.Close()
	bs, err := boltstore.Open(filepath.Join(t.TempDir(), "gaia.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	rec := quota.NewRecorder(bs, &quota.RecorderOptions{Source: s, Raiser: s, Logf: t.Logf})
	lim := limiter.New(s, &limiter.Options{Ledger: rec, Timeout: -1})
	limits := []limiter.Limit{{Name: "q", Key: "{user:alice}user:alice/qdaily", Limit: 100, Period: quota.Calendar{Unit: quota.Daily, Loc: time.UTC}}}
	decide := func(cost int64) limiter.Status {
		t.Helper()
		d, err := lim.Decide(ctx, limits, cost)
		if err != nil || !d.Allowed {
			t.Fatalf("Decide(%d) = %+v, %v", cost, d, err)
		}
		return d.Statuses[0]
	}
	flush := func() {
		t.Helper()
		if err := rec.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ledger := func(c limiter.Counter) limiter.CounterValue {
		t.Helper()
		v, err := bs.Load(ctx, []limiter.Counter{c})
		if err != nil {
			t.Fatal(err)
		}
		return v[0]
	}
	for range 5 {
		decide(1)
	}
	flush()
	c := decide(0).Counter
	if _, err := bs.Write(ctx, []limiter.CounterValue{{Counter: c, Used: 60, Seq: 40}}); err != nil {
		t.Fatal(err)
	}
	if err := lim.Reset(ctx, limits); err != nil {
		t.Fatal(err)
	}
	flush()
	if st := decide(0); st.Used != 0 {
		t.Errorf("Redis after the reset and a flush: used %d, want 0 (the reset undone by a raise)", st.Used)
	}
	if v := ledger(c); v.Used != 0 || v.Seq <= 40 {
		t.Errorf("ledger after the reset: used %d seq %d, want 0 above seq 40", v.Used, v.Seq)
	}
	decide(1)
	flush() // the charge, behind the zero, is refused; Redis is raised
	flush() // and the raised value lands
	if st := decide(0); st.Used != 1 {
		t.Errorf("Redis after a charge and its raise: used %d, want 1", st.Used)
	}
	if v := ledger(c); v.Used != 1 {
		t.Errorf("ledger after a charge and its raise: used %d seq %d, want 1", v.Used, v.Seq)
	}
}
