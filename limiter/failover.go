package limiter

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// FailureMode decides how a Limiter answers when its primary store
// cannot decide (config redis.failure_mode). The zero value is
// FailureLocal.
type FailureMode uint8

const (
	// FailureLocal lets the in-process fallback store decide, so every
	// replica keeps enforcing limits on its own.
	FailureLocal FailureMode = iota
	// FailureOpen admits every request, unlimited and uncharged.
	FailureOpen
	// FailureClosed refuses every request: Decide returns an error
	// wrapping ErrUnavailable.
	FailureClosed
)

// String returns "local", "open" or "closed".
func (m FailureMode) String() string {
	switch m {
	case FailureLocal:
		return "local"
	case FailureOpen:
		return "open"
	case FailureClosed:
		return "closed"
	}
	return fmt.Sprintf("FailureMode(%d)", uint8(m))
}

// ParseFailureMode parses "local", "open" or "closed".
func ParseFailureMode(s string) (FailureMode, error) {
	for _, m := range []FailureMode{FailureLocal, FailureOpen, FailureClosed} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("limiter: unknown failure mode %q, want local, open or closed", s)
}

// State is the health of a Limiter's primary store, for /health and the
// dashboard.
type State struct {
	// Healthy is false while the breaker is open: decisions skip the
	// primary and follow the failure mode.
	Healthy bool `json:"healthy"`
	// Mode says who decides: "primary", or while unhealthy
	// "fallback-local", "open" or "closed".
	Mode string `json:"mode"`
	// Since is when Mode began (the Limiter's creation, at first).
	Since time.Time `json:"since"`
	// LastError is the primary's most recent error, even once recovered.
	LastError string `json:"last_error,omitempty"`
	// Transitions counts the breaker's openings and closings.
	Transitions int64 `json:"transitions"`
	// Failures counts the primary's failed round trips.
	Failures int64 `json:"failures"`
	// HeldRefusals counts requests refused again without the store
	// (Options.HoldRefusals).
	HeldRefusals int64 `json:"held_refusals"`
}

// bounded is a Store whose every round trip gives up after timeout.
type bounded struct {
	Store
	*deadlines // the timeout, and the bounds decisions share
}

func (b bounded) Decide(ctx context.Context, limits []Limit, cost int64) (Decision, error) {
	bound, cancel := b.bound(ctx)
	defer cancel()
	d, err := b.Store.Decide(bound, limits, cost)
	return d, b.explain(bound, err)
}

// deadlines bounds decisions by the timeout. A context of its own per
// decision (context.WithTimeout: a timer, and a link into the request's
// context that its end must undo) was about 3% of gaia-proxy's CPU on
// Redis. Decisions that start within one slot, a sixteenth of the
// timeout, share one instead, made without a parent: each waits at most
// the timeout and at least fifteen sixteenths of it. A shared bound does
// not end with the request's context; a decision whose client went away
// goes on, within the timeout, as it would have in Redis anyway. A
// request context that has already ended, or whose deadline comes
// first, gets a context of its own as before.
type deadlines struct {
	timeout, slot time.Duration
	mu            sync.Mutex // held to replace cur
	cur           atomic.Pointer[sharedBound]
}

// sharedBound is a context that decisions share while it is fresh.
type sharedBound struct {
	ctx    context.Context
	cancel context.CancelFunc // unused: the deadline's timer releases it
	fresh  time.Time          // until when a decision may start with it
}

func newDeadlines(timeout time.Duration) *deadlines {
	return &deadlines{timeout: timeout, slot: timeout / 16}
}

// bound returns the context a decision under ctx waits with, and what
// to call when it is done.
func (d *deadlines) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	now := time.Now()
	if ctx.Done() != nil {
		if dl, ok := ctx.Deadline(); ctx.Err() != nil || ok && dl.Before(now.Add(d.timeout-d.slot)) {
			return context.WithTimeout(ctx, d.timeout)
		}
	}
	sb := d.cur.Load()
	if sb == nil || !now.Before(sb.fresh) {
		sb = d.renew(now)
	}
	return sb.ctx, func() {}
}

// renew replaces the shared bound unless another decision just did.
func (d *deadlines) renew(now time.Time) *sharedBound {
	d.mu.Lock()
	defer d.mu.Unlock()
	if sb := d.cur.Load(); sb != nil && now.Before(sb.fresh) {
		return sb
	}
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(d.timeout))
	sb := &sharedBound{ctx: ctx, cancel: cancel, fresh: now.Add(d.slot)}
	d.cur.Store(sb)
	return sb
}

func (b bounded) Seed(ctx context.Context, counters []CounterValue) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	return b.explain(ctx, b.Store.Seed(ctx, counters))
}

func (b bounded) Refund(ctx context.Context, counters []Counter, cost int64) ([]CounterValue, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	v, err := b.Store.Refund(ctx, counters, cost)
	return v, b.explain(ctx, err)
}

func (b bounded) Reset(ctx context.Context, limits []Limit) ([]CounterValue, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	v, err := b.Store.Reset(ctx, limits)
	return v, b.explain(ctx, err)
}

// explain says that err is a timeout when the deadline of ctx passed.
func (b bounded) explain(ctx context.Context, err error) error {
	if err != nil && ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("no answer within %v: %w", b.timeout, err)
	}
	return err
}

// breaker tracks the health of the primary store, and holds the fallback
// store of the current run of failures.
//
// Closed (healthy), every decision asks the primary. tripAfter
// consecutive failures open it. Open, decisions skip the primary, except
// one probe once probeAt has passed; a failed probe doubles the wait (up
// to maxWait), a successful one closes the breaker. Every transition
// bumps gen, and a result from a call started under an older gen moves
// nothing, so answers that straggle in after a transition neither
// reopen nor close it.
//
// The first failure after a success starts a new run. A run that starts
// fallbackKeep or more after the fallback was last relied on (its last
// failure, or the breaker closing) gets a new fallback (when newFallback
// is set), so it starts from the ledger, not from counters an earlier
// outage left behind. A run that starts sooner keeps the fallback: a
// primary that fails now and then (a timeout every other decision)
// would otherwise meet each failure with an empty store, which admits
// it, and the replica would admit without limit.
//
// The closed path and the open path between probes use only atomics;
// the mutex is taken on failures, transitions and probes. Transitions
// log under it, so their lines come in order.
type breaker struct {
	now              func() time.Time
	logf             func(format string, args ...any)
	name             string // of the primary, for logs
	failing          string // what an outage means, for logs
	mode             string // State.Mode while open
	tripAfter        int64
	minWait, maxWait time.Duration
	newFallback      func() Store

	fallback atomic.Pointer[Store]
	open     atomic.Bool
	gen      atomic.Int64 // transitions
	streak   atomic.Int64 // consecutive failures; written under mu
	probeAt  atomic.Int64 // Unix ns; MaxInt64 while a probe runs

	mu       sync.Mutex
	wait     time.Duration // before the next probe
	since    time.Time     // of the last transition
	relied   time.Time     // when the fallback last stood in: a failure, or the close after one
	lastErr  error
	failures int64
}

// fallbackKeep is how long after it last stood in the fallback is kept
// for the next run of failures.
const fallbackKeep = time.Minute

// ticket is one permission to call the primary.
type ticket struct {
	gen   int64
	probe bool
}

// admit reports whether a decision may call the primary.
func (b *breaker) admit() (ticket, bool) {
	gen := b.gen.Load()
	if !b.open.Load() {
		return ticket{gen: gen}, true
	}
	if b.now().UnixNano() < b.probeAt.Load() {
		return ticket{}, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open.Load() {
		return ticket{gen: b.gen.Load()}, true
	}
	if b.now().UnixNano() < b.probeAt.Load() {
		return ticket{}, false
	}
	b.probeAt.Store(math.MaxInt64)
	return ticket{gen: b.gen.Load(), probe: true}, true
}

// succeed records that the primary answered t's call.
func (b *breaker) succeed(t ticket) {
	if !t.probe && b.streak.Load() == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.gen != b.gen.Load() {
		return
	}
	switch {
	case t.probe:
		now := b.now()
		b.logf("limiter: %s is back after %v, deciding on %s again", b.name, roundDuration(now.Sub(b.since)), b.name)
		b.since, b.relied = now, now
		b.gen.Add(1)
		b.open.Store(false)
	case b.open.Load():
		return
	}
	b.streak.Store(0)
}

// fail records that t's call failed with err.
func (b *breaker) fail(t ticket, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	b.lastErr = err
	if t.gen != b.gen.Load() {
		return
	}
	now := b.now()
	last := b.relied
	b.relied = now
	switch {
	case t.probe:
		b.wait = min(2*b.wait, b.maxWait)
		b.probeAt.Store(now.Add(b.wait).UnixNano())
	case !b.open.Load():
		n := b.streak.Add(1)
		if n == 1 && b.newFallback != nil && now.Sub(last) >= fallbackKeep {
			s := b.newFallback()
			b.fallback.Store(&s)
		}
		if n < b.tripAfter {
			return
		}
		b.logf("limiter: %s unavailable (%v), %s", b.name, err, b.failing)
		b.since = now
		b.wait = b.minWait
		b.probeAt.Store(now.Add(b.wait).UnixNano())
		b.gen.Add(1)
		b.open.Store(true)
	}
}

// abandon gives t back unused: its caller went away, which says nothing
// about the primary. An abandoned probe lets the next decision probe.
func (b *breaker) abandon(t ticket) {
	if !t.probe {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.gen == b.gen.Load() {
		b.probeAt.Store(b.now().UnixNano())
	}
}

// local returns the fallback store of the current run of failures.
func (b *breaker) local() Store { return *b.fallback.Load() }

// cause explains why the primary was skipped.
func (b *breaker) cause() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return fmt.Errorf("breaker open since %s: %w", b.since.Format(time.RFC3339), b.lastErr)
}

func (b *breaker) state() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := State{
		Healthy:     !b.open.Load(),
		Mode:        "primary",
		Since:       b.since,
		Transitions: b.gen.Load(),
		Failures:    b.failures,
	}
	if !s.Healthy {
		s.Mode = b.mode
	}
	if b.lastErr != nil {
		s.LastError = b.lastErr.Error()
	}
	return s
}

// roundDuration rounds d for humans: 12.3s, 250ms.
func roundDuration(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}
