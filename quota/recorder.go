package quota

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// RecorderOptions configure a Recorder. The zero value is usable.
type RecorderOptions struct {
	// FlushInterval is how often Run writes pending usage to the store
	// (config quota.flush_interval). Zero means 1s.
	FlushInterval time.Duration
	// MaxPending bounds the distinct counters waiting to be written.
	// When it is reached, updates to other counters are dropped (and
	// counted) until a write succeeds. Zero means 100000.
	MaxPending int
	// WriteTimeout bounds one store write, so a store that hangs is
	// retried rather than waited on forever. Zero means 10s.
	WriteTimeout time.Duration
	// Logf receives operational logs. Nil means log.Printf.
	Logf func(format string, args ...any)
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// Source, when not nil, is a hot path shared by processes (Redis):
	// Run then writes every counter it holds to the store, once at
	// start and again after the buffer dropped updates, once writes
	// succeed. That carries usage which only the hot path holds, because
	// a process was killed before its flush or this one's buffer
	// overflowed, to the ledger even when its subject sends nothing
	// more. The values are versioned, so a write of one the ledger has,
	// or has newer, changes nothing. A Source that is also a
	// Heartbeater learns of processes that stopped without writing
	// everything (HeartbeatInterval), and Run resyncs after them too.
	Source CounterSource
	// Raiser, when not nil, is the hot path (limiter/redisstore's or
	// limiter/memstore's Store): after each write it is told of the
	// counters the ledger holds ahead of what was written, and brings
	// those it holds behind the ledger up to it (see Raiser); the values
	// it raises are recorded.
	Raiser Raiser
	// RaiseTimeout bounds a Raise, which runs within a flush: the server
	// gives it Redis's timeout for a decision, so that a Redis that
	// hangs delays a flush no longer than it holds a request. A Raise
	// that fails is tried again by the next write that finds its
	// counters ahead. Zero means 1s.
	RaiseTimeout time.Duration
	// HeartbeatInterval is how often Run tells a Heartbeater Source
	// that this process is alive; a process silent for three intervals
	// is taken for dead. Zero means 10s.
	HeartbeatInterval time.Duration
}

// Heartbeater keeps track of the processes sharing a hot path
// (limiter/redisstore's Store): Heartbeat says that the process named id
// is alive, and claims those silent for longer than stale, each claimed
// by one caller only; Leave says that id stopped after writing
// everything to the ledger.
type Heartbeater interface {
	Heartbeat(ctx context.Context, id string, stale time.Duration) (int, error)
	Leave(ctx context.Context, id string) error
}

// Raiser brings quota counters of a hot path (limiter/redisstore's or
// limiter/memstore's Store) that went back behind the ledger up to it.
// A counter goes back when the hot path comes back with older data
// (Redis restarted from an old snapshot, or a replica that lagged
// promoted), charged it without the usage decided while it was away (a
// replica's in-process fallback), or started it from zero because the
// ledger could not be read when it was seeded; the ledger, which keeps
// the highest Seq, then refuses its values until its Seq passes the
// ledger's, and takes its lower usage after. Raise
// takes the ledger's values; a counter whose Seq is below the ledger's,
// or equal with other usage, gets the larger usage of the two and a Seq
// above both; the others (a value merely older than the ledger's, from
// a process that wrote late) are left alone. It returns the counters it
// changed, with their new values.
type Raiser interface {
	Raise(ctx context.Context, ledger []limiter.CounterValue) ([]limiter.CounterValue, error)
}

// CounterSource lists the quota counters a hot path holds, a batch at a
// time: limiter/redisstore's Store.
type CounterSource interface {
	Counters(ctx context.Context, fn func([]limiter.CounterValue) error) error
}

// Stats describe a Recorder's backlog, for /metrics and /health.
type Stats struct {
	// Pending is the number of counters not yet written.
	Pending int
	// Dropped counts updates refused because the buffer was full.
	Dropped uint64
	// LastFlush is when the last successful flush ended; zero before it.
	LastFlush time.Time
	// Lag is the age of the oldest update not yet written; zero when
	// nothing is pending.
	Lag time.Duration
	// Healthy reports that the last write succeeded (true before the
	// first write).
	Healthy bool
	// Errors counts failed writes.
	Errors uint64
	// Raised counts quota counters raised in the hot path to the
	// ledger's usage (see Raiser): Redis restored from older data, or
	// usage decided while it was away. RaiseErrors counts Raises that
	// failed.
	Raised, RaiseErrors uint64
}

// Recorder is the limiter.Ledger on top of a Store: Record buffers the
// latest value of each counter in memory, and Run writes the buffer to
// the store every FlushInterval, in one Write per flush. A failed write
// keeps its values pending, so they are retried on the next tick, merged
// with newer ones. Safe for concurrent use.
type Recorder struct {
	store Store
	o     RecorderOptions

	flushMu sync.Mutex // one flush at a time

	mu       sync.Mutex
	pending  map[counterID]*limiter.CounterValue
	inflight map[counterID]*limiter.CounterValue // being written by flush
	overlap  int                                 // counters both pending and inflight
	since    time.Time                           // first update into pending
	flying   time.Time                           // oldest update in inflight
	f        flushing
	resynced bool   // a resync from Source succeeded
	covered  uint64 // f.dropped when the last successful resync began
	id       string // this process, to a Heartbeater
	deaths   int    // processes found dead, and so resyncs owed

	// Raises not yet logged (see noteRaise), and in all (Stats).
	raiseLogged         time.Time
	raised              int
	raiseFails          int
	raisedAll, raiseErr uint64
}

var _ limiter.Ledger = (*Recorder)(nil)

// NewRecorder returns a Recorder writing to store; o may be nil.
func NewRecorder(store Store, o *RecorderOptions) *Recorder {
	r := &Recorder{store: store, pending: map[counterID]*limiter.CounterValue{}}
	if o != nil {
		r.o = *o
	}
	if r.o.MaxPending <= 0 {
		r.o.MaxPending = 100000
	}
	if r.o.RaiseTimeout <= 0 {
		r.o.RaiseTimeout = time.Second
	}
	if r.o.HeartbeatInterval <= 0 {
		r.o.HeartbeatInterval = 10 * time.Second
	}
	var id [8]byte
	rand.Read(id[:])
	r.id = hex.EncodeToString(id[:])
	r.f = newFlushing(flushText{what: "quota ledger", pending: "usage", held: "counters", drops: "usage updates"}, r.o.FlushInterval, r.o.WriteTimeout, r.o.Logf, r.o.Now)
	return r
}

// Record buffers the latest values of counters; for each counter the
// value with the highest Seq wins. It never blocks on the store. When the
// buffer holds MaxPending counters, values of counters not already
// pending are dropped; because values are absolute, the counter's next
// accepted value carries its usage in full.
func (r *Recorder) Record(values []limiter.CounterValue) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range values {
		id := idOf(v.Counter)
		if cur, ok := r.pending[id]; ok {
			if v.Seq > cur.Seq {
				*cur = v
			}
			continue
		}
		_, flying := r.inflight[id]
		if n := len(r.pending) + len(r.inflight) - r.overlap; n >= r.o.MaxPending && !flying {
			r.f.drop(n)
			continue
		}
		if len(r.pending) == 0 {
			r.since = r.f.now()
		}
		if flying {
			r.overlap++
		}
		p := new(limiter.CounterValue)
		*p = v
		r.pending[id] = p
	}
}

// Load returns the value of each counter: the store's, or the one
// recorded and not yet written when its Seq is higher. So a counter
// loaded right after the hot path lost it never goes backwards.
func (r *Recorder) Load(ctx context.Context, counters []limiter.Counter) ([]limiter.CounterValue, error) {
	// Read the buffer before the store: a value leaves the buffer only
	// after its write succeeded, so it is in one or the other.
	buffered := make([]limiter.CounterValue, len(counters))
	r.mu.Lock()
	for i, c := range counters {
		id := idOf(c)
		buffered[i] = later(value(r.pending[id]), value(r.inflight[id]))
	}
	r.mu.Unlock()
	stored, err := r.store.Load(ctx, counters)
	if err != nil {
		// What the buffer holds is still the best known value (the
		// store being away is why it is held): hand it on with the
		// error, zero for the rest.
		for i, c := range counters {
			buffered[i].Counter = c
		}
		return buffered, fmt.Errorf("quota: load: %w", err)
	}
	if len(stored) != len(counters) {
		return nil, fmt.Errorf("quota: load: store returned %d values for %d counters", len(stored), len(counters))
	}
	for i, c := range counters {
		stored[i] = later(stored[i], buffered[i])
		stored[i].Counter = c
	}
	return stored, nil
}

// value returns *v, or the zero value for nil.
func value(v *limiter.CounterValue) limiter.CounterValue {
	if v == nil {
		return limiter.CounterValue{}
	}
	return *v
}

// later returns the value with the higher Seq, a on a tie.
func later(a, b limiter.CounterValue) limiter.CounterValue {
	if b.Seq > a.Seq {
		return b
	}
	return a
}

// Run flushes every FlushInterval until ctx is done. Flush errors are
// logged (the first failure and the recovery, one line each) and
// retried every second, or every FlushInterval when that is shorter,
// until a flush succeeds. With a Source it also resyncs (see
// RecorderOptions.Source). At shutdown, call Flush after Run returns.
func (r *Recorder) Run(ctx context.Context) {
	if r.o.Source == nil {
		r.f.run(ctx, r.Flush)
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { r.resyncs(ctx) })
	if hb, ok := r.o.Source.(Heartbeater); ok {
		wg.Go(func() { r.beats(ctx, hb) })
	}
	r.f.run(ctx, r.Flush)
	wg.Wait()
}

// beats tells hb every HeartbeatInterval that this process is alive, and
// owes a resync for each process it claims, until ctx is done. It runs
// apart from resyncs, so that a long resync does not silence it.
func (r *Recorder) beats(ctx context.Context, hb Heartbeater) {
	tick := time.NewTicker(r.o.HeartbeatInterval)
	defer tick.Stop()
	for {
		n, err := hb.Heartbeat(ctx, r.id, 3*r.o.HeartbeatInterval)
		if err == nil && n > 0 {
			r.f.logf("quota ledger: %d other processes stopped without writing all their usage; resyncing from the hot path", n)
			r.mu.Lock()
			r.deaths += n
			r.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// maxResyncWait is the longest wait between attempts at a resync that
// keeps failing.
const maxResyncWait = time.Minute

// resyncGap is the least time between the starts of resyncs: while the
// buffer keeps overflowing, a resync after every flush would double the
// load on a ledger already behind.
const resyncGap = time.Minute

// resyncs resyncs from Source whenever one is owed (at start, after
// dropped updates, and after other processes were found dead) and the
// ledger takes writes, until ctx is done; resyncs owed to drops only
// once resyncGap has passed since the last. A resync that fails while
// the ledger takes writes is tried again at growing intervals, up to
// maxResyncWait; meanwhile the ledger's state is looked at every
// FlushInterval, and deaths (which beats counts) every HeartbeatInterval.
// (A process that claims a dead one and dies before its resync leaves
// that one to the next process's resync at start.)
func (r *Recorder) resyncs(ctx context.Context) {
	backoff := r.f.every
	var last time.Time    // when the last successful resync began
	var retryAt time.Time // after a failure, no attempt before; zero otherwise
	for {
		wait := min(r.f.every, r.o.HeartbeatInterval)
		r.mu.Lock()
		dropsOwed, deaths := r.f.dropped != r.covered, r.deaths
		dropped := r.f.dropped
		owed := !r.resynced || dropsOwed || deaths > 0
		// The gap holds back only resyncs owed to drops, which come in
		// floods; a process dies rarely.
		ready := !r.f.failed && !r.f.full && (!r.resynced || deaths > 0 || r.f.now().Sub(last) >= resyncGap) &&
			!time.Now().Before(retryAt)
		why := "at start"
		switch {
		case !r.resynced:
		case deaths > 0:
			why = "after processes stopped"
		default:
			why = "after dropped usage updates"
		}
		r.mu.Unlock()
		if owed && ready {
			began := r.f.now()
			n, err := r.resync(ctx)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				if retryAt.IsZero() {
					r.f.logf("quota ledger: resync from the hot path %s failed, retrying: %v", why, err)
				}
				retryAt, backoff = time.Now().Add(backoff), min(2*backoff, maxResyncWait)
			default:
				r.mu.Lock()
				r.resynced, r.covered = true, dropped
				r.deaths -= deaths
				r.mu.Unlock()
				r.f.logf("quota ledger: resynced from the hot path %s: %d counters read", why, n)
				retryAt, backoff, last = time.Time{}, r.f.every, began
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// resync writes every counter Source holds to the store, a batch per
// write, and returns how many it read. Counters never charged (Seq 0:
// seeded for a request that was refused) are left out: the ledger has
// nothing to learn from them. A batch may name a counter twice (a scan
// can return a key twice); the store keeps the higher Seq.
func (r *Recorder) resync(ctx context.Context) (int, error) {
	n := 0
	err := r.o.Source.Counters(ctx, func(values []limiter.CounterValue) error {
		n += len(values)
		batch := slices.DeleteFunc(slices.Clone(values), func(v limiter.CounterValue) bool { return v.Seq <= 0 })
		if len(batch) == 0 {
			return nil
		}
		return r.write(ctx, batch)
	})
	return n, err
}

// write writes values to the store and, with a Raiser, raises the hot
// path's counters that the store holds ahead; a failed Raise is
// logged and left to the next write.
func (r *Recorder) write(ctx context.Context, values []limiter.CounterValue) error {
	var ahead []limiter.CounterValue
	err := r.f.bounded(ctx, func(ctx context.Context) (err error) {
		ahead, err = r.store.Write(ctx, values)
		return err
	})
	raiser := r.o.Raiser
	if err != nil || len(ahead) == 0 || raiser == nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, r.o.RaiseTimeout)
	defer cancel()
	raised, rerr := raiser.Raise(rctx, ahead)
	if rerr == nil {
		r.Record(raised)
	}
	r.noteRaise(len(raised), rerr)
	return nil
}

// raiseLogEvery spaces the logs of raising: a replica cut off from Redis
// while others use it may find counters ahead, and fail to raise them,
// at every flush.
const raiseLogEvery = time.Minute

// noteRaise logs the outcome of a Raise that changed n counters or
// failed with err: the first, then at most one line every
// raiseLogEvery, counting what came between.
func (r *Recorder) noteRaise(n int, err error) {
	if n == 0 && err == nil {
		return
	}
	r.mu.Lock()
	r.raised += n
	r.raisedAll += uint64(n)
	if err != nil {
		r.raiseFails++
		r.raiseErr++
	}
	now := r.f.now()
	if !r.raiseLogged.IsZero() && now.Sub(r.raiseLogged) < raiseLogEvery {
		r.mu.Unlock()
		return
	}
	raised, fails := r.raised, r.raiseFails
	r.raised, r.raiseFails, r.raiseLogged = 0, 0, now
	r.mu.Unlock()
	if raised > 0 {
		r.f.logf("quota ledger: %d quota counters in the hot path were behind the ledger (restored from older data, or charged without usage decided while it was away); raised to the ledger's usage", raised)
	}
	if err != nil {
		r.f.logf("quota ledger: counters in the ledger are ahead of the hot path's; raising them failed %d times: %v", fails, err)
	}
}

// Leave tells a Heartbeater Source that this process stops with
// everything written, so that no other process resyncs after it. Call
// it after the last Flush, and only when that succeeded.
func (r *Recorder) Leave(ctx context.Context) error {
	if hb, ok := r.o.Source.(Heartbeater); ok {
		return hb.Leave(ctx, r.id)
	}
	return nil
}

// Flush writes everything pending now in one Write. On error the values
// stay pending, merged with newer ones, for the next flush.
func (r *Recorder) Flush(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()

	r.mu.Lock()
	batch := r.pending
	if len(batch) == 0 {
		r.f.wrote()
		r.mu.Unlock()
		return nil
	}
	r.inflight, r.flying = batch, r.since
	r.pending = make(map[counterID]*limiter.CounterValue, len(batch))
	r.mu.Unlock()

	values := make([]limiter.CounterValue, 0, len(batch))
	for _, v := range batch {
		values = append(values, *v)
	}
	err := r.write(ctx, values)

	r.mu.Lock()
	defer r.mu.Unlock()
	r.inflight, r.overlap = nil, 0
	if err != nil {
		for id, v := range batch {
			if cur := r.pending[id]; cur == nil || v.Seq > cur.Seq {
				r.pending[id] = v
			}
		}
		r.since = r.flying // the batch is older than anything recorded since
		err = fmt.Errorf("quota: write %d counters: %w", len(values), err)
		r.f.result(ctx, err, nil)
		return err
	}
	r.f.result(ctx, nil, func() string { return fmt.Sprintf("%d counters written", len(values)) })
	return nil
}

// Stats returns the Recorder's backlog.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Stats{Pending: len(r.pending) + len(r.inflight) - r.overlap, Dropped: r.f.dropped, LastFlush: r.f.last, Healthy: !r.f.failed, Errors: r.f.errors,
		Raised: r.raisedAll, RaiseErrors: r.raiseErr}
	oldest := r.since
	if len(r.inflight) > 0 {
		oldest = r.flying
	}
	if s.Pending > 0 {
		s.Lag = r.f.now().Sub(oldest)
	}
	return s
}
