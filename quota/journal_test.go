package quota_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

// fakeJournalStore is a quota.JournalStore made of funcs.
type fakeJournalStore struct {
	WriteViolationsFunc func(ctx context.Context, vs []quota.Violation) error
	WriteRollupsFunc    func(ctx context.Context, rs []quota.Rollup) error
}

func (f *fakeJournalStore) WriteViolations(ctx context.Context, vs []quota.Violation) error {
	return f.WriteViolationsFunc(ctx, vs)
}

func (f *fakeJournalStore) WriteRollups(ctx context.Context, rs []quota.Rollup) error {
	return f.WriteRollupsFunc(ctx, rs)
}

// journalDB is what a fakeJournalStore stored: violations by ID (with
// how often each was written), the last roll-up batch and each row's
// last value; writes fail while fail is set.
type journalDB struct {
	mu      sync.Mutex
	viols   map[string]quota.Violation
	writes  map[string]int
	rows    map[string]quota.Rollup
	batch   []quota.Rollup // the last roll-up batch, sorted
	sizes   []int          // of every roll-up batch written
	calls   int
	fail    error
	flushed chan struct{} // a roll-up batch was written
}

func newJournalDB() (*journalDB, *fakeJournalStore) {
	db := &journalDB{viols: map[string]quota.Violation{}, writes: map[string]int{}, rows: map[string]quota.Rollup{}, flushed: make(chan struct{}, 100)}
	return db, &fakeJournalStore{
		WriteViolationsFunc: func(_ context.Context, vs []quota.Violation) error {
			db.mu.Lock()
			defer db.mu.Unlock()
			db.calls++
			if db.fail != nil {
				return db.fail
			}
			for _, v := range vs {
				db.viols[v.ID] = v
				db.writes[v.ID]++
			}
			return nil
		},
		WriteRollupsFunc: func(_ context.Context, rs []quota.Rollup) error {
			db.mu.Lock()
			defer db.mu.Unlock()
			db.calls++
			if db.fail != nil {
				return db.fail
			}
			db.sizes = append(db.sizes, len(rs))
			db.batch = slices.SortedFunc(slices.Values(rs), func(a, b quota.Rollup) int { return strings.Compare(rollupID(a), rollupID(b)) })
			for _, r := range rs {
				db.rows[rollupID(r)] = r
			}
			db.flushed <- struct{}{}
			return nil
		},
	}
}

func (db *journalDB) setFail(err error) {
	db.mu.Lock()
	db.fail = err
	db.mu.Unlock()
}

// lastBatch returns the last roll-up batch and forgets it.
func (db *journalDB) lastBatch() []quota.Rollup {
	db.mu.Lock()
	defer db.mu.Unlock()
	b := db.batch
	db.batch = nil
	return b
}

func rollupID(r quota.Rollup) string {
	return r.Minute.UTC().Format("15:04") + " " + r.Subject + " " + r.Route + " " + r.Replica
}

func showRollups(rs []quota.Rollup) string {
	var lines []string
	for _, r := range rs {
		lines = append(lines, fmt.Sprintf("%s user=%s %d/%d/%d", rollupID(r), r.User, r.Allowed, r.RateLimited, r.QuotaExceeded))
	}
	return strings.Join(lines, "\n")
}

var noon = time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)

// at returns noon plus minutes and seconds.
func at(m, s int) time.Time {
	return noon.Add(time.Duration(m)*time.Minute + time.Duration(s)*time.Second)
}

// ev returns an event of subject on route at t with outcome o; a refused
// one carries its limit.
func ev(t time.Time, subject, route string, o quota.Outcome) quota.Event {
	e := quota.Event{Time: t, Subject: subject, User: strings.TrimPrefix(subject, "user:"), Plan: "free", Route: route, Method: "GET", Path: "/x", Outcome: o}
	switch o {
	case quota.RateLimited:
		e.Violated = &quota.Violated{Name: "free-1s", Limit: 10, Window: time.Second}
	case quota.QuotaExceeded:
		e.Violated = &quota.Violated{Name: "free-daily", Limit: 10000, Period: "daily"}
	}
	return e
}

func newJournal(t *testing.T, s quota.JournalStore, o *quota.JournalOptions) (*quota.Journal, *clock, *logs) {
	t.Helper()
	clk, lg := &clock{t: at(0, 30)}, &logs{}
	if o == nil {
		o = &quota.JournalOptions{}
	}
	o.Replica, o.Now, o.Logf = "r1", clk.Now, lg.Logf
	return quota.NewJournal(s, o), clk, lg
}

func flushJournal(t *testing.T, j *quota.Journal) {
	t.Helper()
	if err := j.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

func wantBatch(t *testing.T, got []quota.Rollup, want ...string) {
	t.Helper()
	if g, w := showRollups(got), strings.Join(want, "\n"); g != w {
		t.Errorf("roll-up batch:\ngot\n%s\nwant\n%s", g, w)
	}
}

func TestJournalRollsUpPerMinute(t *testing.T) {
	db, s := newJournalDB()
	j, _, _ := newJournal(t, s, nil)
	for _, e := range []quota.Event{
		ev(at(0, 1), "user:alice", "confirm", quota.Allowed),
		ev(at(0, 59), "user:alice", "confirm", quota.Allowed),
		ev(at(0, 30), "user:alice", "confirm", quota.RateLimited),
		ev(at(0, 31), "user:alice", "", quota.QuotaExceeded),
		ev(at(1, 0), "user:alice", "confirm", quota.Allowed), // the next minute
		ev(at(0, 5).In(time.FixedZone("X", 3600)), "user:bob", "confirm", quota.Allowed),
		{Time: at(0, 5), Subject: "user:bob"}, // no outcome: ignored
	} {
		j.Record(e)
	}
	if st := j.Stats(); st.PendingRollups != 4 || st.PendingViolations != 2 {
		t.Errorf("Stats: got %+v, want 4 roll-ups and 2 violations pending", st)
	}
	flushJournal(t, j)
	wantBatch(t, db.lastBatch(),
		"12:00 user:alice  r1 user=alice 0/0/1",
		"12:00 user:alice confirm r1 user=alice 2/1/0",
		"12:00 user:bob confirm r1 user=bob 1/0/0",
		"12:01 user:alice confirm r1 user=alice 1/0/0")
	if st := j.Stats(); st.PendingRollups != 0 || st.PendingViolations != 0 || st.Lag != 0 || !st.Healthy {
		t.Errorf("Stats after Flush: got %+v, want nothing pending", st)
	}
}

func TestJournalFlushWritesAbsoluteCounts(t *testing.T) {
	db, s := newJournalDB()
	j, _, _ := newJournal(t, s, nil)
	for range 3 {
		j.Record(ev(at(0, 10), "user:alice", "", quota.Allowed))
	}
	j.Record(ev(at(0, 10), "user:bob", "", quota.Allowed))
	flushJournal(t, j)
	wantBatch(t, db.lastBatch(), "12:00 user:alice  r1 user=alice 3/0/0", "12:00 user:bob  r1 user=bob 1/0/0")
	j.Record(ev(at(0, 20), "user:alice", "", quota.Allowed))
	j.Record(ev(at(0, 20), "user:alice", "", quota.RateLimited))
	flushJournal(t, j) // alice's row in full; bob's is unchanged
	wantBatch(t, db.lastBatch(), "12:00 user:alice  r1 user=alice 4/1/0")
	calls := db.calls
	flushJournal(t, j)
	if db.calls != calls {
		t.Errorf("an empty Flush called the store %d times", db.calls-calls)
	}
}

func TestJournalViolations(t *testing.T) {
	db, s := newJournalDB()
	j, _, _ := newJournal(t, s, nil)
	shadowQuota := ev(at(0, 3), "user:carol", "", quota.Allowed)
	shadowQuota.Violated = &quota.Violated{Name: "free-daily", Limit: 100, Period: "daily", Shadow: true}
	shadowRate := ev(at(0, 4), "user:carol", "", quota.Allowed)
	shadowRate.Violated = &quota.Violated{Name: "free-1s", Limit: 10, Window: time.Second, Shadow: true}
	ny := time.FixedZone("EST", -5*3600)
	j.Record(ev(at(0, 1).Add(1234567*time.Nanosecond).In(ny), "user:alice", "confirm", quota.RateLimited))
	j.Record(ev(at(0, 2), "user:bob", "", quota.QuotaExceeded))
	j.Record(ev(at(0, 2), "user:bob", "", quota.Allowed)) // no violation
	j.Record(shadowQuota)
	j.Record(shadowRate)
	flushJournal(t, j)
	want := []quota.Violation{
		{ID: "r1-1", At: at(0, 1).Add(1234 * time.Microsecond), Subject: "user:alice", User: "alice", Plan: "free", Route: "confirm", Method: "GET", Path: "/x",
			LimitName: "free-1s", Limit: 10, Window: time.Second, Kind: quota.RateLimited},
		{ID: "r1-2", At: at(0, 2), Subject: "user:bob", User: "bob", Plan: "free", Method: "GET", Path: "/x",
			LimitName: "free-daily", Limit: 10000, Period: "daily", Kind: quota.QuotaExceeded},
		{ID: "r1-3", At: at(0, 3), Subject: "user:carol", User: "carol", Plan: "free", Method: "GET", Path: "/x",
			LimitName: "free-daily", Limit: 100, Period: "daily", Kind: quota.QuotaExceeded, Shadow: true},
		{ID: "r1-4", At: at(0, 4), Subject: "user:carol", User: "carol", Plan: "free", Method: "GET", Path: "/x",
			LimitName: "free-1s", Limit: 10, Window: time.Second, Kind: quota.RateLimited, Shadow: true},
	}
	if len(db.viols) != len(want) {
		t.Fatalf("got %d violations, want %d: %+v", len(db.viols), len(want), db.viols)
	}
	for _, w := range want {
		if g := db.viols[w.ID]; g != w { // At in UTC: == compares its Location too
			t.Errorf("violation %s:\ngot  %+v\nwant %+v", w.ID, g, w)
		}
	}
	wantBatch(t, db.lastBatch(), "12:00 user:alice confirm r1 user=alice 0/1/0", "12:00 user:bob  r1 user=bob 1/0/1", "12:00 user:carol  r1 user=carol 2/0/0")
}

func TestJournalFailingStoreRetries(t *testing.T) {
	db, s := newJournalDB()
	j, clk, lg := newJournal(t, s, nil)
	db.setFail(errors.New("connection refused"))
	t0 := clk.Now()
	for i := range 5 {
		j.Record(ev(at(0, i), "user:alice", "", quota.RateLimited))
		clk.Add(time.Second)
		if err := j.Flush(context.Background()); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("Flush %d: got %v, want the store's error", i, err)
		}
	}
	st := j.Stats()
	if st.PendingViolations != 5 || st.PendingRollups != 1 || st.Healthy || st.Lag != clk.Now().Sub(t0) || st.Errors != 5 {
		t.Errorf("Stats while failing: got %+v, want 5 violations and 1 roll-up pending for %v, unhealthy, 5 errors", st, clk.Now().Sub(t0))
	}
	if n := lg.count("journal write failed"); n != 1 {
		t.Errorf("failure log lines: got %d, want 1: %q", n, lg.lines)
	}
	db.setFail(nil)
	j.Record(ev(at(0, 9), "user:alice", "", quota.Allowed))
	flushJournal(t, j)
	flushJournal(t, j)
	wantBatch(t, db.lastBatch(), "12:00 user:alice  r1 user=alice 1/5/0")
	for id, n := range db.writes {
		if n != 1 {
			t.Errorf("violation %s written %d times, want once", id, n)
		}
	}
	if len(db.viols) != 5 {
		t.Errorf("got %d violations stored, want 5", len(db.viols))
	}
	if n := lg.count("journal write recovered: 5 violations and 1 roll-ups written"); n != 1 || len(lg.lines) != 2 {
		t.Errorf("logs: got %q, want one failure and one recovery line", lg.lines)
	}
	if st := j.Stats(); st.PendingViolations != 0 || st.PendingRollups != 0 || !st.Healthy || st.Lag != 0 || !st.LastFlush.Equal(clk.Now()) {
		t.Errorf("Stats after recovery: got %+v", st)
	}
}

// TestJournalWriteDuringFlush: what is recorded while a batch is being
// written is written by the next flush, with its absolute count.
func TestJournalWriteDuringFlush(t *testing.T) {
	db, s := newJournalDB()
	entered, release := make(chan struct{}), make(chan struct{})
	write := s.WriteRollupsFunc
	s.WriteRollupsFunc = func(ctx context.Context, rs []quota.Rollup) error {
		close(entered)
		<-release
		return write(ctx, rs)
	}
	j, _, _ := newJournal(t, s, &quota.JournalOptions{MaxViolations: 2})
	j.Record(ev(at(0, 1), "user:alice", "", quota.RateLimited))
	done := make(chan error)
	go func() { done <- j.Flush(context.Background()) }()
	<-entered
	j.Record(ev(at(0, 2), "user:alice", "", quota.RateLimited))
	j.Record(ev(at(0, 2), "user:bob", "", quota.Allowed))
	j.Record(ev(at(0, 2), "user:carol", "", quota.RateLimited)) // violations being written count
	if st := j.Stats(); st.PendingRollups != 3 || st.PendingViolations != 2 || st.DroppedViolations != 1 {
		t.Errorf("Stats during write: got %+v, want 3 roll-ups and 2 violations pending, 1 dropped", st)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	wantBatch(t, db.lastBatch(), "12:00 user:alice  r1 user=alice 0/1/0")
	if st := j.Stats(); st.PendingRollups != 3 || st.PendingViolations != 1 {
		t.Errorf("Stats after write: got %+v, want 3 roll-ups and 1 violation pending", st)
	}
	s.WriteRollupsFunc = write
	flushJournal(t, j)
	wantBatch(t, db.lastBatch(), "12:00 user:alice  r1 user=alice 0/2/0", "12:00 user:bob  r1 user=bob 1/0/0", "12:00 user:carol  r1 user=carol 0/1/0")
	if len(db.viols) != 2 {
		t.Errorf("got %d violations stored, want 2", len(db.viols))
	}
}

// TestJournalFailedWriteDuringRecord: a batch that fails while more
// violations arrive is written again first, under the IDs it had.
func TestJournalFailedWriteDuringRecord(t *testing.T) {
	db, s := newJournalDB()
	entered, release := make(chan struct{}), make(chan struct{})
	write := s.WriteViolationsFunc
	s.WriteViolationsFunc = func(context.Context, []quota.Violation) error {
		close(entered)
		<-release
		return errors.New("timeout")
	}
	j, _, _ := newJournal(t, s, nil)
	j.Record(ev(at(0, 1), "user:alice", "", quota.RateLimited))
	done := make(chan error)
	go func() { done <- j.Flush(context.Background()) }()
	<-entered
	j.Record(ev(at(0, 2), "user:bob", "", quota.RateLimited))
	j.Record(ev(at(0, 3), "user:carol", "", quota.QuotaExceeded))
	close(release)
	if err := <-done; err == nil {
		t.Fatal("Flush: got nil error from a failing store")
	}
	s.WriteViolationsFunc = write
	flushJournal(t, j)
	for id, want := range map[string]string{"r1-1": "user:alice 12:00:01", "r1-2": "user:bob 12:00:02", "r1-3": "user:carol 12:00:03"} {
		if v := db.viols[id]; v.Subject+" "+v.At.Format(time.TimeOnly) != want {
			t.Errorf("violation %s: got %+v, want %s", id, v, want)
		}
	}
	if len(db.viols) != 3 || j.Stats().PendingViolations != 0 {
		t.Errorf("got %d violations stored, %d pending, want 3, 0", len(db.viols), j.Stats().PendingViolations)
	}
}

func TestJournalBoundedViolations(t *testing.T) {
	db, s := newJournalDB()
	j, _, lg := newJournal(t, s, &quota.JournalOptions{MaxViolations: 3})
	for i := range 5 {
		j.Record(ev(at(0, i), "user:alice", "", quota.RateLimited))
	}
	if st := j.Stats(); st.PendingViolations != 3 || st.DroppedViolations != 2 {
		t.Errorf("Stats: got %+v, want 3 pending, 2 dropped", st)
	}
	want := "journal buffer full (3 violations): dropping violations until the store catches up"
	if n := lg.count(want); n != 1 || len(lg.lines) != 1 {
		t.Errorf("logs: got %q, want one line %q", lg.lines, want)
	}
	flushJournal(t, j)
	wantBatch(t, db.lastBatch(), "12:00 user:alice  r1 user=alice 0/5/0") // counts are never dropped
	if len(db.viols) != 3 {
		t.Errorf("got %d violations stored, want the first 3", len(db.viols))
	}
	if n := lg.count("2 violations were dropped while it was full"); n != 1 {
		t.Errorf("logs: got %q, want a line saying 2 were dropped", lg.lines)
	}
	j.Record(ev(at(0, 9), "user:alice", "", quota.RateLimited))
	flushJournal(t, j)
	if st := j.Stats(); len(db.viols) != 4 || st.DroppedViolations != 2 {
		t.Errorf("after draining: got %d stored and %+v, want 4 stored and 2 dropped in total", len(db.viols), st)
	}
}

// TestJournalForgetsOldMinutes: written minutes older than the two
// before the current one leave memory, and a late event for one counts
// in the oldest kept minute instead of overwriting its written count.
func TestJournalForgetsOldMinutes(t *testing.T) {
	db, s := newJournalDB()
	j, clk, _ := newJournal(t, s, nil)
	j.Record(ev(at(0, 10), "user:alice", "", quota.Allowed))
	flushJournal(t, j)
	clk.Add(2 * time.Minute) // 12:02:30: minute 12:00 is still kept
	j.Record(ev(at(0, 20), "user:alice", "", quota.Allowed))
	flushJournal(t, j)
	wantBatch(t, db.lastBatch(), "12:00 user:alice  r1 user=alice 2/0/0")
	clk.Add(time.Minute) // 12:03:30: keeps 12:01 on
	flushJournal(t, j)
	j.Record(ev(at(0, 30), "user:alice", "", quota.Allowed))
	flushJournal(t, j)
	wantBatch(t, db.lastBatch(), "12:01 user:alice  r1 user=alice 1/0/0")

	// A row not yet written is kept however old.
	db.setFail(errors.New("down"))
	j.Record(ev(at(3, 0), "user:bob", "", quota.Allowed))
	clk.Add(10 * time.Minute)
	if err := j.Flush(context.Background()); err == nil {
		t.Fatal("Flush: got nil error from a failing store")
	}
	db.setFail(nil)
	flushJournal(t, j)
	wantBatch(t, db.lastBatch(), "12:03 user:bob  r1 user=bob 1/0/0")
}

// TestJournalBoundedRollups: while the store fails, the roll-up rows
// held stay within the bound: the oldest minutes are dropped, counted
// and logged once; the newest minutes land when the store is back.
func TestJournalBoundedRollups(t *testing.T) {
	const subjects, minutes, bound = 2000, 60, 100000 // the default bound
	db, s := newJournalDB()
	j, clk, lg := newJournal(t, s, nil)
	db.setFail(errors.New("connection refused"))
	for m := range minutes {
		if m > 0 {
			clk.Add(time.Minute) // at(m, 30)
		}
		for i := range subjects {
			j.Record(ev(at(m, 0), fmt.Sprint("key:", i), "", quota.Allowed))
		}
		if err := j.Flush(context.Background()); err == nil {
			t.Fatalf("minute %d: Flush: got nil error from a failing store", m)
		}
		if st := j.Stats(); st.PendingRollups > bound {
			t.Fatalf("minute %d: %d roll-ups pending, want at most %d", m, st.PendingRollups, bound)
		}
	}
	const dropped = minutes*subjects - bound // the first 10 minutes
	if st := j.Stats(); st.PendingRollups != bound || st.DroppedRollups != dropped {
		t.Errorf("Stats while failing: got %+v, want %d roll-ups pending and %d dropped", st, bound, dropped)
	}
	if n := lg.count("journal roll-up backlog full"); n != 1 {
		t.Errorf("logs: got %q, want one line saying roll-ups are being dropped", lg.lines)
	}
	db.setFail(nil)
	flushJournal(t, j)
	if st := j.Stats(); st.PendingRollups != 0 || len(db.rows) != bound || st.DroppedRollups != dropped {
		t.Errorf("after recovery: got %d rows stored and %+v, want %d stored, none pending, %d dropped", len(db.rows), st, bound, dropped)
	}
	for _, k := range []string{"12:09 key:0  r1", "12:09 key:1999  r1"} {
		if _, ok := db.rows[k]; ok {
			t.Errorf("row %s of a dropped minute was stored", k)
		}
	}
	for _, k := range []string{"12:10 key:0  r1", "12:59 key:1999  r1"} {
		if r, ok := db.rows[k]; !ok || r.Allowed != 1 {
			t.Errorf("row %s: got %+v, want 1 allowed", k, r)
		}
	}
	if n := lg.count(fmt.Sprintf("journal roll-up backlog drained: %d roll-up rows were dropped", dropped)); n != 1 {
		t.Errorf("logs: got %q, want one line saying %d rows were dropped", lg.lines, dropped)
	}
}

// TestJournalWritesBacklogInChunks: a backlog larger than one write is
// written in several, each short of the write timeout; a chunk that
// fails stays pending with those after it, and lands at the next flush.
func TestJournalWritesBacklogInChunks(t *testing.T) {
	db, s := newJournalDB()
	write := s.WriteRollupsFunc
	failAt := 2 // the second write fails
	s.WriteRollupsFunc = func(ctx context.Context, rs []quota.Rollup) error {
		if failAt--; failAt == 0 {
			return errors.New("connection reset")
		}
		return write(ctx, rs)
	}
	j, _, _ := newJournal(t, s, nil)
	for i := range 25000 {
		j.Record(ev(at(0, 1), fmt.Sprint("key:", i), "", quota.Allowed))
	}
	if err := j.Flush(context.Background()); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("Flush: got %v, want the store's error", err)
	}
	if st := j.Stats(); len(db.rows) != 10000 || st.PendingRollups != 15000 || st.Healthy {
		t.Errorf("after a failed chunk: got %d rows stored and %+v, want 10000 stored, 15000 pending, unhealthy", len(db.rows), st)
	}
	flushJournal(t, j)
	if st := j.Stats(); len(db.rows) != 25000 || st.PendingRollups != 0 || !st.Healthy {
		t.Errorf("after recovery: got %d rows stored and %+v, want all 25000 stored", len(db.rows), st)
	}
	if want := []int{10000, 10000, 5000}; !slices.Equal(db.sizes, want) {
		t.Errorf("roll-up writes: got sizes %v, want %v", db.sizes, want)
	}
}

// TestJournalRecordDuringLargeFlush: a Flush takes the backlog one chunk
// at a time, so Record waits for no more than copying part of a chunk:
// while the first chunk's write blocks, Record returns, and a row of a
// later chunk is written by this flush with the count it has then.
func TestJournalRecordDuringLargeFlush(t *testing.T) {
	db, s := newJournalDB()
	entered, release := make(chan struct{}), make(chan struct{})
	write := s.WriteRollupsFunc
	first := true
	s.WriteRollupsFunc = func(ctx context.Context, rs []quota.Rollup) error {
		if first {
			first = false
			close(entered)
			<-release
		}
		return write(ctx, rs)
	}
	j, _, _ := newJournal(t, s, nil)
	for i := range 25000 {
		j.Record(ev(at(0, 1), fmt.Sprint("key:", i), "", quota.Allowed))
	}
	flushed := make(chan error)
	go func() { flushed <- j.Flush(context.Background()) }()
	<-entered
	recorded := make(chan struct{})
	go func() {
		j.Record(ev(at(0, 2), "key:0", "", quota.Allowed))     // being written
		j.Record(ev(at(0, 2), "key:24999", "", quota.Allowed)) // not taken yet
		j.Record(ev(at(0, 2), "key:new", "", quota.Allowed))   // after the backlog
		j.Stats()
		close(recorded)
	}()
	select {
	case <-recorded:
	case <-time.After(10 * time.Second): // only a hang gets here
		t.Fatal("Record blocked while a flush was writing")
	}
	close(release)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if got := db.rows["12:00 key:24999  r1"].Allowed; got != 2 {
		t.Errorf("key:24999 written with %d allowed, want 2: recorded before its chunk was taken", got)
	}
	if st := j.Stats(); st.PendingRollups != 2 {
		t.Errorf("Stats after Flush: got %+v, want key:0 and key:new pending", st)
	}
	flushJournal(t, j)
	if a, b := db.rows["12:00 key:0  r1"].Allowed, db.rows["12:00 key:new  r1"].Allowed; a != 2 || b != 1 {
		t.Errorf("second flush: got key:0 %d and key:new %d allowed, want 2 and 1", a, b)
	}
}

func TestJournalRunFlushesOnTick(t *testing.T) {
	db, s := newJournalDB()
	j, _, _ := newJournal(t, s, &quota.JournalOptions{FlushInterval: time.Millisecond})
	j.Record(ev(at(0, 1), "user:alice", "", quota.Allowed))
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { j.Run(ctx); close(stopped) }()
	select {
	case <-db.flushed:
	case <-time.After(10 * time.Second):
		t.Error("no write within 10s of a 1ms flush interval")
	}
	cancel()
	<-stopped
	wantBatch(t, db.lastBatch(), "12:00 user:alice  r1 user=alice 1/0/0")
}

// TestJournalFloodFlushesEarly: violations that fill half the buffer
// are written at once, not at the next tick (an hour away here), so a
// flood on a healthy store drops only what outruns the store itself.
func TestJournalFloodFlushesEarly(t *testing.T) {
	db, s := newJournalDB()
	j, _, _ := newJournal(t, s, &quota.JournalOptions{FlushInterval: time.Hour, MaxViolations: 100})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { j.Run(ctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	for i := range 49 {
		j.Record(ev(at(0, i%60), "user:alice", "", quota.RateLimited))
	}
	select {
	case <-db.flushed:
		t.Fatal("written before the buffer was half full")
	case <-time.After(50 * time.Millisecond):
	}
	j.Record(ev(at(0, 50), "user:alice", "", quota.RateLimited)) // the 50th: half of 100
	select {
	case <-db.flushed:
	case <-time.After(10 * time.Second):
		t.Fatal("half the buffer full, and nothing written within 10 s of an hour's interval")
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if len(db.viols) != 50 {
		t.Errorf("%d violations written, want 50", len(db.viols))
	}
}

func TestJournalFlushAtShutdown(t *testing.T) {
	db, s := newJournalDB()
	j, _, _ := newJournal(t, s, &quota.JournalOptions{FlushInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { j.Run(ctx); close(stopped) }()
	for i := range 1000 {
		j.Record(ev(at(0, 1), fmt.Sprint("key:", i), "", quota.RateLimited))
	}
	cancel()
	<-stopped
	flushJournal(t, j)
	if got := len(db.lastBatch()); got != 1000 {
		t.Errorf("shutdown flush: got a batch of %d roll-ups, want all 1000", got)
	}
	if len(db.viols) != 1000 {
		t.Errorf("shutdown flush: got %d violations, want 1000", len(db.viols))
	}
	if st := j.Stats(); st.PendingViolations != 0 || st.PendingRollups != 0 {
		t.Errorf("Stats after shutdown flush: got %+v, want nothing pending", st)
	}
}

func TestJournalCleansStrings(t *testing.T) {
	db, s := newJournalDB()
	j, _, _ := newJournal(t, s, nil)
	long := strings.Repeat("é", 600) // 1200 bytes: clipped inside a rune
	for _, tc := range []struct{ subject, path, wantSubject, wantPath string }{
		{"user:alice", "/ok/ü", "user:alice", "/ok/ü"},
		{"user:a\x00b", "/a\x00b\xffc", "user:ab", "/ab\uFFFDc"},
		{"user:bob", long, "user:bob", strings.Repeat("é", 512)},
		{"user:carol", strings.Repeat("\xffa", 1000), "user:carol", strings.Repeat("\uFFFDa", 256)}, // grown, clipped again
	} {
		e := ev(at(0, 1), tc.subject, "", quota.RateLimited)
		e.Path = tc.path
		j.Record(e)
		flushJournal(t, j)
		v := db.viols["r1-"+fmt.Sprint(len(db.viols))]
		if v.Subject != tc.wantSubject || v.Path != tc.wantPath {
			t.Errorf("%.20q %.20q: got %.20q %.20q (%d bytes), want %.20q %.20q", tc.subject, tc.path, v.Subject, v.Path, len(v.Path), tc.wantSubject, tc.wantPath)
		}
		if got := db.lastBatch(); len(got) != 1 || got[0].Subject != tc.wantSubject {
			t.Errorf("%.20q: got roll-ups %s, want subject %q", tc.subject, showRollups(got), tc.wantSubject)
		}
	}
}

func TestJournalDefaultReplica(t *testing.T) {
	a, b := quota.NewJournal(nil, nil).Replica(), quota.NewJournal(nil, nil).Replica()
	if a == "" || a == b {
		t.Errorf("default replicas: got %q and %q, want two distinct names", a, b)
	}
}

func TestViolationCursor(t *testing.T) {
	v := quota.Violation{ID: "host-1a2b-42", At: at(0, 1).Add(1500 * time.Microsecond)}
	gotAt, gotID, err := quota.ParseViolationCursor(quota.ViolationCursor(v))
	if err != nil || !gotAt.Equal(v.At) || gotID != v.ID {
		t.Errorf("round trip: got %v, %q, %v, want %v, %q", gotAt, gotID, err, v.At, v.ID)
	}
	for _, c := range []string{"", "!!", "AAAAAAAAAAA"} { // the last is 8 bytes: no ID
		if _, _, err := quota.ParseViolationCursor(c); !errors.Is(err, quota.ErrBadCursor) {
			t.Errorf("ParseViolationCursor(%q): got %v, want ErrBadCursor", c, err)
		}
	}
	// An ID a database cannot take as text: not UTF-8, or with a NUL.
	for _, id := range []string{"\x00", "\xff", "r1-\x00", "host-\xc3(-1", "r1-42\x00"} {
		c := quota.ViolationCursor(quota.Violation{ID: id, At: v.At})
		if _, _, err := quota.ParseViolationCursor(c); !errors.Is(err, quota.ErrBadCursor) || !strings.Contains(err.Error(), fmt.Sprintf("%q", c)) {
			t.Errorf("ParseViolationCursor of ID %q: got %v, want ErrBadCursor naming the cursor", id, err)
		}
	}
	// Any other text is an ID.
	for _, id := range []string{"r1-é-7", "host name-1", "\u2603-1"} {
		if _, got, err := quota.ParseViolationCursor(quota.ViolationCursor(quota.Violation{ID: id, At: v.At})); err != nil || got != id {
			t.Errorf("ID %q: got %q, %v", id, got, err)
		}
	}
}

// BenchmarkJournalRecord is the hot-path cost: Record runs for every
// limited request, while Run flushes in the background.
func BenchmarkJournalRecord(b *testing.B) {
	noop := func(context.Context, []quota.Violation) error { return nil }
	s := &fakeJournalStore{WriteViolationsFunc: noop, WriteRollupsFunc: func(context.Context, []quota.Rollup) error { return nil }}
	subjects := make([]string, 1000)
	for i := range subjects {
		subjects[i] = fmt.Sprint("key:", i)
	}
	for _, o := range []quota.Outcome{quota.Allowed, quota.RateLimited} {
		b.Run(o.String(), func(b *testing.B) {
			j := quota.NewJournal(s, &quota.JournalOptions{Replica: "bench", FlushInterval: 10 * time.Millisecond, Logf: b.Logf})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go j.Run(ctx)
			var next sync.Mutex
			g := 0
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				next.Lock()
				i := g * 7919
				g++
				next.Unlock()
				e := ev(time.Now(), "", "confirm", o)
				for ; pb.Next(); i++ {
					e.Subject = subjects[i%len(subjects)]
					j.Record(e)
				}
			})
		})
	}
}

func ExampleJournal() {
	show := &fakeJournalStore{
		WriteViolationsFunc: func(_ context.Context, vs []quota.Violation) error {
			for _, v := range vs {
				fmt.Printf("violation %s %s %s %s by %s\n", v.ID, v.At.Format(time.TimeOnly), v.Subject, v.Kind, v.LimitName)
			}
			return nil
		},
		WriteRollupsFunc: func(_ context.Context, rs []quota.Rollup) error {
			slices.SortFunc(rs, func(a, b quota.Rollup) int { return cmp.Compare(a.Subject, b.Subject) })
			for _, r := range rs {
				fmt.Printf("roll-up %s %s on %q: %d allowed, %d rate limited\n", r.Minute.Format(time.TimeOnly), r.Subject, r.Route, r.Allowed, r.RateLimited)
			}
			return nil
		},
	}
	j := quota.NewJournal(show, &quota.JournalOptions{Replica: "pod-a"})
	t := time.Date(2026, 3, 8, 12, 0, 42, 0, time.UTC)
	j.Record(quota.Event{Time: t, Subject: "key:acme-prod", Route: "confirm", Outcome: quota.Allowed})
	j.Record(quota.Event{Time: t, Subject: "key:acme-prod", Route: "confirm", Outcome: quota.RateLimited,
		Violated: &quota.Violated{Name: "confirm-1s", Limit: 2, Window: time.Second}})
	j.Record(quota.Event{Time: t, Subject: "ip:203.0.113.7", Outcome: quota.Allowed})
	_ = j.Flush(context.Background()) // at shutdown; Run does it every FlushInterval
	// Output:
	// violation pod-a-1 12:00:42 key:acme-prod rate_limited by confirm-1s
	// roll-up 12:00:00 ip:203.0.113.7 on "": 1 allowed, 0 rate limited
	// roll-up 12:00:00 key:acme-prod on "confirm": 1 allowed, 1 rate limited
}
