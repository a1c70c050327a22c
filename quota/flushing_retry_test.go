package quota_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// The tests below run Run in a synctest bubble: its ticker runs on the
// bubble's fake clock, which time.Sleep advances, at once and exactly,
// once every goroutine in the bubble is blocked. They sleep to half
// seconds so that no step lands on a tick.

// TestRunRetriesFailedFlushEverySecond: with a 20 s flush interval, a
// flush that fails is retried every second, so what queued while the
// store was away lands within a second of its return (SPEC §6: within
// 5 s), not up to 20 s later; the first flush that succeeds brings the
// 20 s interval back.
func TestRunRetriesFailedFlushEverySecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, s := newLedger()
		lg := &logs{}
		r := quota.NewRecorder(s, &quota.RecorderOptions{FlushInterval: 20 * time.Second, Logf: lg.Logf})
		defer running(t, r.Run)()

		l.setFail(errors.New("database down"))
		r.Record([]limiter.CounterValue{val(ca, 1, 1)})
		time.Sleep(20*time.Second + 500*time.Millisecond) // the first tick, at 20 s, fails
		synctest.Wait()
		if st := r.Stats(); st.Healthy || st.Errors != 1 || st.Pending != 1 {
			t.Fatalf("Stats after the first tick: got %+v, want unhealthy, 1 error, 1 pending", st)
		}
		time.Sleep(30 * time.Second) // retried at 21 s, 22 s, ... 50 s
		synctest.Wait()
		if st := r.Stats(); st.Errors != 31 {
			t.Errorf("failed writes 30 s into the outage: got %d, want 31 (the tick and a retry every second)", st.Errors)
		}
		if n := lg.count("quota ledger write failed"); n != 1 {
			t.Errorf("failure log lines: got %d, want 1: %q", n, lg.lines)
		}
		if n := lg.count("retrying every 1s"); n != 1 {
			t.Errorf("failure log lines naming the retry interval: got %d, want 1: %q", n, lg.lines)
		}

		r.Record([]limiter.CounterValue{val(ca, 2, 2)})
		l.setFail(nil) // the database returns at 50.5 s
		time.Sleep(time.Second)
		synctest.Wait()
		wantValue(t, l.get(ca), 2, 2)
		if st := r.Stats(); !st.Healthy || st.Pending != 0 || st.Errors != 31 {
			t.Errorf("Stats a second after the store returned: got %+v, want healthy, nothing pending, 31 errors", st)
		}

		// Back to every 20 s, counted from the flush that succeeded (51 s).
		r.Record([]limiter.CounterValue{val(cb, 1, 1)})
		time.Sleep(19 * time.Second)
		synctest.Wait()
		if n := l.writes(cb); n != 0 {
			t.Errorf("b written %d times within 19 s of a successful flush, want 0: the interval is 20 s", n)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		wantValue(t, l.get(cb), 1, 1)
		if n := l.writes(ca); n != 1 {
			t.Errorf("a written %d times, want once", n)
		}
	})
}

// TestRunRetriesShortInterval: an interval shorter than a second is
// also the retry interval.
func TestRunRetriesShortInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, s := newLedger()
		r := quota.NewRecorder(s, &quota.RecorderOptions{FlushInterval: 200 * time.Millisecond, Logf: (&logs{}).Logf})
		defer running(t, r.Run)()

		l.setFail(errors.New("database down"))
		r.Record([]limiter.CounterValue{val(ca, 1, 1)})
		time.Sleep(1100 * time.Millisecond) // ticks at 0.2 s ... 1 s
		synctest.Wait()
		if st := r.Stats(); st.Errors != 5 {
			t.Errorf("failed writes: got %d, want 5", st.Errors)
		}
		l.setFail(nil)
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		wantValue(t, l.get(ca), 1, 1)
	})
}

// TestJournalRunRetriesFailedFlushEverySecond: the journal, flushing
// every 20 s, retries a failed flush every second too, and goes back to
// its interval once a flush succeeds.
func TestJournalRunRetriesFailedFlushEverySecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db, s := newJournalDB()
		j := quota.NewJournal(s, &quota.JournalOptions{Replica: "r1", FlushInterval: 20 * time.Second, Logf: (&logs{}).Logf})
		defer running(t, j.Run)()

		db.setFail(errors.New("database down"))
		j.Record(ev(time.Now(), "user:alice", "api", quota.RateLimited))
		time.Sleep(30*time.Second + 500*time.Millisecond) // failed at 20 s, 21 s, ... 30 s
		synctest.Wait()
		if st := j.Stats(); st.Healthy || st.Errors != 11 || st.PendingViolations != 1 {
			t.Fatalf("Stats during the outage: got %+v, want unhealthy, 11 errors, 1 violation pending", st)
		}
		db.setFail(nil)
		time.Sleep(time.Second)
		synctest.Wait()
		if st := j.Stats(); !st.Healthy || st.PendingViolations != 0 || st.PendingRollups != 0 {
			t.Errorf("Stats a second after the store returned: got %+v, want healthy, nothing pending", st)
		}
		db.mu.Lock()
		calls, viols := db.calls, len(db.viols)
		db.mu.Unlock()
		if viols != 1 {
			t.Errorf("violations written: got %d, want 1", viols)
		}

		// Back to every 20 s, counted from the flush that succeeded (31 s).
		j.Record(ev(time.Now(), "user:bob", "api", quota.QuotaExceeded))
		time.Sleep(19 * time.Second)
		synctest.Wait()
		db.mu.Lock()
		if db.calls != calls {
			t.Errorf("store called %d times within 19 s of a successful flush, want 0: the interval is 20 s", db.calls-calls)
		}
		db.mu.Unlock()
		time.Sleep(time.Second)
		synctest.Wait()
		if st := j.Stats(); st.PendingViolations != 0 || st.PendingRollups != 0 {
			t.Errorf("Stats 20 s after the last flush: got %+v, want nothing pending", st)
		}
	})
}

// TestJournalAuditRetriedEverySecond: an audit entry whose direct write
// failed is retried every second from then on, not from the journal's
// next tick, so it lands about a second after the store returns even
// with a long interval.
func TestJournalAuditRetriedEverySecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fs := newJournalDB()
		s := &auditJournalStore{fakeJournalStore: *fs}
		j := quota.NewJournal(s, &quota.JournalOptions{Replica: "r1", FlushInterval: 20 * time.Second, Logf: (&logs{}).Logf})
		defer running(t, j.Run)()

		time.Sleep(5 * time.Second) // well into the journal's interval
		s.setFail(errors.New("database down"))
		if err := j.Audit(t.Context(), entry(t, "quota.reset", "key:k1", nil)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2500 * time.Millisecond)
		synctest.Wait()
		s.setFail(nil)
		time.Sleep(time.Second)
		synctest.Wait()
		if got, _ := s.written(); got != "quota.reset key:k1" {
			t.Errorf("a second after the store returned, the audit log holds %q, want the reset", got)
		}
	})
}

// running runs run in a goroutine until the returned stop is called,
// which waits for run to return.
func running(t *testing.T, run func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan struct{})
	go func() { run(ctx); close(stopped) }()
	return func() { cancel(); <-stopped }
}
