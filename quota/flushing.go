package quota

import (
	"context"
	"log"
	"time"
)

// flushing is what the Recorder and the Journal share: a loop that
// flushes every interval (at least every second while writes fail),
// writes bounded by a timeout, a bounded buffer that drops when the
// store falls behind, and one log line when writes start failing (or
// the buffer starts dropping) and one when they recover, not one per
// tick. The owner guards the counts with its own lock.
type flushing struct {
	flushText
	every   time.Duration
	timeout time.Duration
	logf    func(format string, args ...any)
	now     func() time.Time
	failed  bool          // the last write failed
	errors  uint64        // failed writes, shutdown's last flush aside
	dropped uint64        // updates refused by a full buffer
	full    bool          // dropping: logged once per episode
	lost    uint64        // dropped in this episode
	last    time.Time     // when the last write succeeded
	kick    chan struct{} // asks run for a flush now (soon)
}

// flushText names what a flushing writes, for its log lines.
type flushText struct {
	what    string // "quota ledger", "journal"
	pending string // what stays queued while writes fail
	held    string // what fills the buffer
	drops   string // what a full buffer drops
}

// newFlushing returns the flushing of a Recorder or a Journal from the
// options they share, zero ones meaning: every second, writes bounded
// by 10 s, log.Printf, time.Now.
func newFlushing(text flushText, every, timeout time.Duration, logf func(string, ...any), now func() time.Time) flushing {
	f := flushing{flushText: text, every: every, timeout: timeout, logf: logf, now: now, kick: make(chan struct{}, 1)}
	if f.every <= 0 {
		f.every = time.Second
	}
	if f.timeout <= 0 {
		f.timeout = 10 * time.Second
	}
	if f.logf == nil {
		f.logf = log.Printf
	}
	if f.now == nil {
		f.now = time.Now
	}
	return f
}

// drop counts an update refused because the buffer holds n, and logs
// the first of an episode.
func (f *flushing) drop(n int) {
	f.dropped++
	f.lost++
	if !f.full {
		f.full = true
		f.logf("%s buffer full (%d %s): dropping %s until the store catches up", f.what, n, f.held, f.drops)
	}
}

// maxRetryWait is the longest wait between flushes while they fail, so
// that what queued while the store was away lands within about a second
// of its return (SPEC §6: within 5 s), whatever the interval.
const maxRetryWait = time.Second

// retry is how often a failing flush is retried: every interval, or
// every maxRetryWait when that is sooner.
func (f *flushing) retry() time.Duration { return min(f.every, maxRetryWait) }

// soon asks run for a flush now, rather than at the next tick: one that
// fails puts it on its retry cadence at once.
func (f *flushing) soon() {
	select {
	case f.kick <- struct{}{}:
	default: // one is asked for already
	}
}

// run calls flush every interval until ctx is done. Errors are logged by
// result; while flushes fail (what is pending could not all be written)
// they are retried every f.retry(), and the first that succeeds brings
// back the interval.
func (f *flushing) run(ctx context.Context, flush func(context.Context) error) {
	tick := time.NewTicker(f.every)
	defer tick.Stop()
	retrying := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-f.kick:
		}
		failed := flush(ctx) != nil
		if failed == retrying || f.retry() == f.every {
			continue
		}
		retrying = failed
		if failed {
			tick.Reset(f.retry())
		} else {
			tick.Reset(f.every)
		}
	}
}

// bounded calls write with the write timeout, so a store that hangs is
// retried rather than waited on forever.
func (f *flushing) bounded(ctx context.Context, write func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	return write(ctx)
}

// result records a write's outcome and logs a change: the first failure
// (unless ctx ended: a shutdown's last flush follows), and the recovery,
// saying what it wrote.
func (f *flushing) result(ctx context.Context, err error, written func() string) {
	if err != nil && ctx.Err() == nil {
		f.errors++
	}
	switch {
	case err != nil && !f.failed && ctx.Err() == nil:
		f.failed = true
		f.logf("%s write failed, keeping %s pending and retrying every %v: %v", f.what, f.pending, f.retry(), err)
	case err == nil && f.failed:
		f.failed = false
		f.logf("%s write recovered: %s", f.what, written())
	}
	if err == nil {
		f.wrote()
	}
}

// wrote records that the buffer reached the store (or had nothing to
// write), and ends a dropping episode, saying how much it lost.
func (f *flushing) wrote() {
	f.last = f.now()
	if f.full {
		f.full = false
		f.logf("%s buffer drained: %d %s were dropped while it was full", f.what, f.lost, f.drops)
		f.lost = 0
	}
}
