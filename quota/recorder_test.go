package quota_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// fakeStore is a quota.Store made of funcs.
type fakeStore struct {
	LoadFunc  func(ctx context.Context, counters []limiter.Counter) ([]limiter.CounterValue, error)
	WriteFunc func(ctx context.Context, values []limiter.CounterValue) ([]limiter.CounterValue, error)
}

func (f *fakeStore) Load(ctx context.Context, cs []limiter.Counter) ([]limiter.CounterValue, error) {
	return f.LoadFunc(ctx, cs)
}

func (f *fakeStore) Write(ctx context.Context, vs []limiter.CounterValue) ([]limiter.CounterValue, error) {
	return f.WriteFunc(ctx, vs)
}

// ledger is a map behind a fakeStore: it keeps the highest Seq, fails
// writes while fail is set, and reports each batch on batches.
type ledger struct {
	mu      sync.Mutex
	m       map[string]limiter.CounterValue
	given   map[string]int // values written, by counter
	fail    error
	batches chan []limiter.CounterValue
}

func newLedger() (*ledger, *fakeStore) {
	l := &ledger{m: map[string]limiter.CounterValue{}, given: map[string]int{}, batches: make(chan []limiter.CounterValue, 100)}
	return l, &fakeStore{
		LoadFunc: func(_ context.Context, cs []limiter.Counter) ([]limiter.CounterValue, error) {
			vs := make([]limiter.CounterValue, len(cs))
			for i, c := range cs {
				vs[i] = l.get(c)
			}
			return vs, nil
		},
		WriteFunc: func(_ context.Context, vs []limiter.CounterValue) ([]limiter.CounterValue, error) {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.fail != nil {
				return nil, l.fail
			}
			var ahead []limiter.CounterValue
			for _, v := range vs {
				k := id(v.Counter)
				l.given[k]++
				switch cur, ok := l.m[k]; {
				case !ok || v.Seq > cur.Seq:
					l.m[k] = v
				case cur.Seq > v.Seq || cur.Used != v.Used:
					ahead = append(ahead, cur)
				}
			}
			l.batches <- vs
			return ahead, nil
		},
	}
}

func (l *ledger) get(c limiter.Counter) limiter.CounterValue {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := l.m[id(c)]
	v.Counter = c
	return v
}

// writes returns how many values of c the ledger was given.
func (l *ledger) writes(c limiter.Counter) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.given[id(c)]
}

func (l *ledger) setFail(err error) {
	l.mu.Lock()
	l.fail = err
	l.mu.Unlock()
}

func id(c limiter.Counter) string { return fmt.Sprint(c.Key, "@", c.Start.Unix()) }

// clock is a settable Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logs collects log lines.
type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) Logf(format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

// count returns how many lines contain s.
func (l *logs) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

var (
	day = time.Date(2026, 3, 8, 0, 0, 0, 0, time.UTC)
	ca  = limiter.Counter{Key: "{user:a}:q:daily", Start: day}
	cb  = limiter.Counter{Key: "{user:b}:q:daily", Start: day}
	cc  = limiter.Counter{Key: "{user:c}:q:daily", Start: day}
	cd  = limiter.Counter{Key: "{user:d}:q:daily", Start: day}
)

func val(c limiter.Counter, used, seq int64) limiter.CounterValue {
	return limiter.CounterValue{Counter: c, Used: used, Seq: seq}
}

func newRecorder(t *testing.T, s quota.Store, o *quota.RecorderOptions) (*quota.Recorder, *clock, *logs) {
	t.Helper()
	clk, lg := &clock{t: day.Add(time.Hour)}, &logs{}
	if o == nil {
		o = &quota.RecorderOptions{}
	}
	o.Now, o.Logf = clk.Now, lg.Logf
	return quota.NewRecorder(s, o), clk, lg
}

func flush(t *testing.T, r *quota.Recorder) {
	t.Helper()
	if err := r.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

func wantValue(t *testing.T, got limiter.CounterValue, used, seq int64) {
	t.Helper()
	if got.Used != used || got.Seq != seq {
		t.Errorf("%s: got used=%d seq=%d, want used=%d seq=%d", got.Key, got.Used, got.Seq, used, seq)
	}
}

func TestRecordMergesBySeq(t *testing.T) {
	l, s := newLedger()
	r, _, _ := newRecorder(t, s, nil)
	r.Record([]limiter.CounterValue{val(ca, 3, 3), val(cb, 1, 1)})
	r.Record([]limiter.CounterValue{val(ca, 5, 5)})
	r.Record([]limiter.CounterValue{val(ca, 4, 4), val(ca, 2, 2)}) // late arrivals
	// The same counter, its Start in another zone.
	r.Record([]limiter.CounterValue{val(limiter.Counter{Key: cb.Key, Start: day.In(time.FixedZone("X", 3600))}, 2, 2)})
	if got := r.Stats().Pending; got != 2 {
		t.Errorf("Pending: got %d, want 2", got)
	}
	flush(t, r)
	if batch := <-l.batches; len(batch) != 2 {
		t.Errorf("batch: got %d values, want 2", len(batch))
	}
	wantValue(t, l.get(ca), 5, 5)
	wantValue(t, l.get(cb), 2, 2)
}

func TestLoadMergesPending(t *testing.T) {
	_, s := newLedger()
	r, _, _ := newRecorder(t, s, nil)
	r.Record([]limiter.CounterValue{val(ca, 10, 10), val(cb, 50, 50)})
	flush(t, r)
	r.Record([]limiter.CounterValue{val(ca, 12, 12), val(cb, 40, 40)}) // a is newer, b older
	got, err := r.Load(context.Background(), []limiter.Counter{ca, cb, cc})
	if err != nil {
		t.Fatal(err)
	}
	wantValue(t, got[0], 12, 12)
	wantValue(t, got[1], 50, 50)
	wantValue(t, got[2], 0, 0)
	if got[2].Counter != cc {
		t.Errorf("unknown counter: got %+v, want its Counter filled in", got[2].Counter)
	}
}

// TestLoadDuringWrite: values being written are neither in the buffer
// nor in the store yet; Load still sees them.
func TestLoadDuringWrite(t *testing.T) {
	l, s := newLedger()
	entered, release := make(chan struct{}), make(chan struct{})
	write := s.WriteFunc
	s.WriteFunc = func(ctx context.Context, vs []limiter.CounterValue) ([]limiter.CounterValue, error) {
		close(entered)
		<-release
		return write(ctx, vs)
	}
	r, _, _ := newRecorder(t, s, &quota.RecorderOptions{MaxPending: 2})
	r.Record([]limiter.CounterValue{val(ca, 7, 7), val(cb, 1, 1)})
	done := make(chan error)
	go func() { done <- r.Flush(context.Background()) }()
	<-entered
	got, err := r.Load(context.Background(), []limiter.Counter{ca})
	if err != nil {
		t.Fatal(err)
	}
	wantValue(t, got[0], 7, 7)
	// The buffer is full, but counters being written take updates.
	r.Record([]limiter.CounterValue{val(ca, 8, 8), val(cc, 1, 1)})
	if st := r.Stats(); st.Pending != 2 || st.Dropped != 1 {
		t.Errorf("Stats during write: got Pending %d, Dropped %d, want 2, 1", st.Pending, st.Dropped)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	wantValue(t, l.get(ca), 7, 7)
	if st := r.Stats(); st.Pending != 1 {
		t.Errorf("Pending after write: got %d, want 1", st.Pending)
	}
	s.WriteFunc = write
	flush(t, r)
	wantValue(t, l.get(ca), 8, 8)
}

func TestRunFlushesOnTick(t *testing.T) {
	l, s := newLedger()
	r, clk, _ := newRecorder(t, s, &quota.RecorderOptions{FlushInterval: time.Millisecond})
	r.Record([]limiter.CounterValue{val(ca, 1, 1)})
	clk.Add(300 * time.Millisecond)
	if st := r.Stats(); st.Pending != 1 || st.Lag != 300*time.Millisecond || !st.LastFlush.IsZero() {
		t.Errorf("Stats before Run: got %+v, want 1 pending for 300ms, never flushed", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { r.Run(ctx); close(stopped) }()
	select {
	case batch := <-l.batches:
		if len(batch) != 1 || batch[0].Seq != 1 {
			t.Errorf("batch: got %v, want [a seq 1]", batch)
		}
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("no write within 10s of a 1ms flush interval")
	}
	cancel()
	<-stopped // the flush that wrote the batch is over
	wantValue(t, l.get(ca), 1, 1)
	st := r.Stats()
	if st.Pending != 0 || st.Lag != 0 || !st.Healthy || !st.LastFlush.Equal(clk.Now()) {
		t.Errorf("Stats: got %+v, want nothing pending, healthy, LastFlush %v", st, clk.Now())
	}
}

func TestFailingStoreRecovers(t *testing.T) {
	l, s := newLedger()
	r, clk, lg := newRecorder(t, s, nil)
	l.setFail(errors.New("disk on fire"))
	t0 := clk.Now()
	r.Record([]limiter.CounterValue{val(ca, 1, 1)})
	for i := range 5 {
		clk.Add(time.Second)
		r.Record([]limiter.CounterValue{val(ca, int64(i+2), int64(i+2)), val(cb, int64(i+1), int64(i+1))})
		if err := r.Flush(context.Background()); err == nil || !strings.Contains(err.Error(), "disk on fire") {
			t.Fatalf("Flush %d: got %v, want the store's error", i, err)
		}
	}
	st := r.Stats()
	if st.Pending != 2 || st.Healthy || st.Lag != clk.Now().Sub(t0) || st.Errors != 5 {
		t.Errorf("Stats while failing: got %+v, want 2 pending, unhealthy, lag %v, 5 errors", st, clk.Now().Sub(t0))
	}
	if n := lg.count("quota ledger write failed"); n != 1 {
		t.Errorf("failure log lines: got %d, want 1: %q", n, lg.lines)
	}
	l.setFail(nil)
	flush(t, r)
	flush(t, r)
	wantValue(t, l.get(ca), 6, 6)
	wantValue(t, l.get(cb), 5, 5)
	if n := lg.count("quota ledger write recovered"); n != 1 {
		t.Errorf("recovery log lines: got %d, want 1: %q", n, lg.lines)
	}
	if st := r.Stats(); st.Pending != 0 || !st.Healthy || st.Lag != 0 || st.Errors != 5 {
		t.Errorf("Stats after recovery: got %+v", st)
	}
}

func TestBufferFull(t *testing.T) {
	l, s := newLedger()
	r, _, lg := newRecorder(t, s, &quota.RecorderOptions{MaxPending: 2})
	r.Record([]limiter.CounterValue{val(ca, 1, 1), val(cb, 1, 1), val(cc, 1, 1)})
	r.Record([]limiter.CounterValue{val(cd, 1, 1), val(ca, 2, 2)}) // a is pending: kept
	r.Record([]limiter.CounterValue{val(cc, 2, 2)})
	st := r.Stats()
	if st.Pending != 2 || st.Dropped != 3 {
		t.Errorf("Stats: got Pending %d, Dropped %d, want 2, 3", st.Pending, st.Dropped)
	}
	want := "quota ledger buffer full (2 counters): dropping usage updates until the store catches up"
	if n := lg.count(want); n != 1 || len(lg.lines) != 1 {
		t.Errorf("logs: got %q, want one line %q", lg.lines, want)
	}
	flush(t, r)
	wantValue(t, l.get(ca), 2, 2)
	wantValue(t, l.get(cc), 0, 0)
	if n := lg.count("3 usage updates were dropped"); n != 1 {
		t.Errorf("logs: got %q, want a line saying 3 updates were dropped", lg.lines)
	}
	// The next value of a dropped counter carries its usage in full.
	r.Record([]limiter.CounterValue{val(cc, 3, 3)})
	flush(t, r)
	wantValue(t, l.get(cc), 3, 3)
	if st := r.Stats(); st.Dropped != 3 {
		t.Errorf("Dropped: got %d, want 3 (a total)", st.Dropped)
	}
}

func TestFlushAtShutdown(t *testing.T) {
	l, s := newLedger()
	r, _, _ := newRecorder(t, s, &quota.RecorderOptions{FlushInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { r.Run(ctx); close(stopped) }()
	var counters []limiter.Counter
	for i := range 1000 {
		c := limiter.Counter{Key: fmt.Sprintf("{key:%d}:q:monthly", i), Start: day}
		counters = append(counters, c)
		r.Record([]limiter.CounterValue{val(c, int64(i), int64(i+1))})
	}
	cancel()
	<-stopped
	flush(t, r)
	if batch := <-l.batches; len(batch) != 1000 {
		t.Errorf("shutdown flush: got a batch of %d, want all 1000 in one", len(batch))
	}
	for i, c := range counters {
		wantValue(t, l.get(c), int64(i), int64(i+1))
	}
	if st := r.Stats(); st.Pending != 0 {
		t.Errorf("Pending after shutdown flush: got %d, want 0", st.Pending)
	}
}

func TestLoadStoreError(t *testing.T) {
	_, s := newLedger()
	s.LoadFunc = func(context.Context, []limiter.Counter) ([]limiter.CounterValue, error) {
		return nil, errors.New("connection refused")
	}
	r, _, _ := newRecorder(t, s, nil)
	r.Record([]limiter.CounterValue{val(ca, 90, 9)}) // held: the store is away
	got, err := r.Load(context.Background(), []limiter.Counter{ca, cb})
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Load: got %v, want the store's error", err)
	}
	// With the error, the values held: a fallback seeds from them, not
	// from zero.
	if len(got) != 2 {
		t.Fatalf("Load with the store away returned %d values, want 2 (the ones held, zero for the rest)", len(got))
	}
	wantValue(t, got[0], 90, 9)
	wantValue(t, got[1], 0, 0)
	if got[0].Counter != ca || got[1].Counter != cb {
		t.Errorf("counters %+v, %+v; want them filled in", got[0].Counter, got[1].Counter)
	}
}

// BenchmarkRecord is the hot-path cost: every admitted request with a
// quota records one or two counters.
func BenchmarkRecord(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("counters=%d", n), func(b *testing.B) {
			r := quota.NewRecorder(&fakeStore{}, &quota.RecorderOptions{MaxPending: 2 * n, Logf: b.Logf})
			counters := make([]limiter.Counter, n)
			for i := range counters {
				counters[i] = limiter.Counter{Key: fmt.Sprintf("{user:%d}:q:daily", i), Start: day}
			}
			var next sync.Mutex
			g := 0
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				next.Lock()
				i := g * 7919
				g++
				next.Unlock()
				vs := make([]limiter.CounterValue, 2)
				for seq := int64(1); pb.Next(); seq++ {
					vs[0] = val(counters[i%n], seq, seq)
					vs[1] = val(counters[(i+n/2)%n], seq, seq)
					r.Record(vs)
					i++
				}
			})
		})
	}
}

// hotPath is a quota.CounterSource holding counters in memory, read in
// batches of two; it fails while fail is set, and counts its reads.
type hotPath struct {
	mu     sync.Mutex
	values []limiter.CounterValue
	fail   error
	reads  int
}

func (h *hotPath) set(vs ...limiter.CounterValue) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.values = vs
}

func (h *hotPath) setFail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fail = err
}

func (h *hotPath) Counters(ctx context.Context, fn func([]limiter.CounterValue) error) error {
	h.mu.Lock()
	vs, err := slices.Clone(h.values), h.fail
	h.reads++
	h.mu.Unlock()
	if err != nil {
		return err
	}
	for len(vs) > 0 {
		n := min(2, len(vs))
		if err := fn(vs[:n]); err != nil {
			return err
		}
		vs = vs[n:]
	}
	return nil
}

// runRecorder runs r until the test ends.
func runRecorder(t *testing.T, r *quota.Recorder) {
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { r.Run(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
}

// waitLedger waits until the ledger holds used for every counter in want.
func waitLedger(t *testing.T, l *ledger, lg *logs, want map[limiter.Counter]int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok := true
		for c, used := range want {
			ok = ok && l.get(c).Used == used
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			for c, used := range want {
				t.Errorf("%s: the ledger holds %d, want %d", c.Key, l.get(c).Used, used)
			}
			t.Fatalf("logs: %q", lg.lines)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestResyncAtStart: with a Source, Run writes every counter the hot
// path holds to the ledger at start (a process killed before its flush
// left them there), keeping the ledger's newer values and leaving out
// counters never charged, and logs it once. A source that fails at
// first is tried again.
func TestResyncAtStart(t *testing.T) {
	l, s := newLedger()
	l.m[id(cb)] = val(cb, 9, 9) // newer than the hot path's
	src := &hotPath{}
	src.set(val(ca, 5, 5), val(cb, 4, 4), val(cc, 7, 7), val(ca, 3, 3), val(cd, 0, 0)) // d: never charged
	src.setFail(errors.New("redis away"))
	r, _, lg := newRecorder(t, s, &quota.RecorderOptions{FlushInterval: time.Millisecond, Source: src})
	runRecorder(t, r)
	for lg.count("resync from the hot path at start failed, retrying: redis away") == 0 {
		time.Sleep(time.Millisecond)
	}
	src.setFail(nil)
	waitLedger(t, l, lg, map[limiter.Counter]int64{ca: 5, cb: 9, cc: 7})
	for lg.count("resynced from the hot path at start: 5 counters read") == 0 {
		time.Sleep(time.Millisecond)
	}
	if n := l.writes(cd); n != 0 {
		t.Errorf("a counter never charged was written %d times, want none", n)
	}
	reads := func() int { src.mu.Lock(); defer src.mu.Unlock(); return src.reads }
	n := reads()
	time.Sleep(20 * time.Millisecond) // 20 flush intervals: no resync owed
	if m := reads(); m != n {
		t.Errorf("the source was read %d more times after the resync, want none owed", m-n)
	}
}

// TestResyncAfterDrops: updates the full buffer dropped reach the ledger
// from the hot path once writes recover, though their counters see no
// further update; resyncs start at least resyncGap (a minute) apart, so
// a buffer that keeps overflowing does not have one after every flush.
func TestResyncAfterDrops(t *testing.T) {
	l, s := newLedger()
	src := &hotPath{}
	r, clk, lg := newRecorder(t, s, &quota.RecorderOptions{FlushInterval: time.Millisecond, MaxPending: 1, Source: src})
	runRecorder(t, r)
	for lg.count("resynced from the hot path at start: 0 counters read") == 0 {
		time.Sleep(time.Millisecond)
	}
	l.setFail(errors.New("database away"))
	r.Record([]limiter.CounterValue{val(ca, 1, 1), val(cb, 2, 2), val(cc, 3, 3)}) // b and c dropped
	src.set(val(ca, 1, 1), val(cb, 2, 2), val(cc, 3, 3))
	if st := r.Stats(); st.Dropped != 2 {
		t.Fatalf("Dropped = %d, want 2", st.Dropped)
	}
	l.setFail(nil)
	time.Sleep(20 * time.Millisecond) // 20 flush intervals: still within the gap
	if v := l.get(cb); v.Used != 0 {
		t.Errorf("resynced %+v within a minute of the last resync", v)
	}
	clk.Add(time.Minute)
	waitLedger(t, l, lg, map[limiter.Counter]int64{ca: 1, cb: 2, cc: 3})
	for lg.count("resynced from the hot path after dropped usage updates: 3 counters read") == 0 {
		time.Sleep(time.Millisecond)
	}
}

// raisingHotPath is a hotPath that is also a quota.Raiser: it records
// what it is asked to raise and answers with raised (or fail).
type raisingHotPath struct {
	hotPath
	asked  [][]limiter.CounterValue
	raised []limiter.CounterValue
	fail   error
	within []time.Duration // per Raise, the time its context left it
}

func (h *raisingHotPath) Raise(ctx context.Context, ledger []limiter.CounterValue) ([]limiter.CounterValue, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.asked = append(h.asked, slices.Clone(ledger))
	if deadline, ok := ctx.Deadline(); ok {
		h.within = append(h.within, time.Until(deadline))
	}
	return h.raised, h.fail
}

// TestRaiseBehindLedger: a written value the ledger holds ahead of is
// handed to a Raiser source, and the value it raises is recorded and
// written next; a Raise that fails is logged and does not fail the
// flush; without ahead values nothing is asked.
func TestRaiseBehindLedger(t *testing.T) {
	l, s := newLedger()
	l.m[id(ca)] = val(ca, 20, 20) // written before Redis went back to (10, 10)
	src := &raisingHotPath{raised: []limiter.CounterValue{val(ca, 20, 21)}}
	r, clk, lg := newRecorder(t, s, &quota.RecorderOptions{Raiser: src, RaiseTimeout: 50 * time.Millisecond})

	r.Record([]limiter.CounterValue{val(ca, 12, 12), val(cb, 1, 1)})
	flush(t, r)
	if len(src.asked) != 1 || len(src.asked[0]) != 1 {
		t.Fatalf("Raise asked %v, want once, for a", src.asked)
	}
	wantValue(t, src.asked[0][0], 20, 20)
	// A hung hot path holds the flush no longer than RaiseTimeout.
	if len(src.within) != 1 || src.within[0] > 50*time.Millisecond {
		t.Errorf("Raise's context left it %v, want at most RaiseTimeout (50ms)", src.within)
	}
	if lg.count("1 quota counters in the hot path were behind the ledger") != 1 {
		t.Errorf("logs: %q, want the raise logged", lg.lines)
	}
	if st := r.Stats(); st.Pending != 1 {
		t.Errorf("Pending after the raise: %d, want 1 (the raised value)", st.Pending)
	}
	flush(t, r)
	wantValue(t, l.get(ca), 20, 21)
	if len(src.asked) != 1 {
		t.Errorf("Raise asked again, %v, with nothing ahead", src.asked[1:])
	}

	// A raise that fails: logged once a minute, however often.
	src.fail, src.raised = errors.New("redis away"), nil
	l.m[id(cb)] = val(cb, 5, 5)
	for range 3 {
		r.Record([]limiter.CounterValue{val(cb, 2, 2)})
		if err := r.Flush(context.Background()); err != nil {
			t.Errorf("Flush with a failing Raise: %v, want nil (the write succeeded)", err)
		}
	}
	if n := lg.count("raising them failed"); n != 0 {
		t.Errorf("logs: %q, want no failure logged within a minute of the last raise's line", lg.lines)
	}
	clk.Add(time.Minute)
	r.Record([]limiter.CounterValue{val(cb, 2, 2)})
	flush(t, r)
	if lg.count("raising them failed 4 times: redis away") != 1 {
		t.Errorf("logs: %q, want the 4 failed raises logged in one line", lg.lines)
	}
	if st := r.Stats(); st.Pending != 0 || !st.Healthy || st.Raised != 1 || st.RaiseErrors != 4 {
		t.Errorf("Stats after the raises: %+v, want nothing pending, healthy, 1 raised, 4 failed", st)
	}
}
