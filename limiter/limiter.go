package limiter

import (
	"context"
	"fmt"
	"log"
	"sync"
	"sync/atomic"
	"time"
)

// Ledger is the durable record of quota usage behind a Store.
// quota.Recorder implements it.
type Ledger interface {
	// Load returns the durable value of each counter (zero for counters
	// it never saw), including values recorded but not yet written. On
	// an error it may still return a value for every counter, the best
	// it knows (those recorded but not yet written, zero for the rest),
	// which the Limiter then seeds with.
	Load(ctx context.Context, counters []Counter) ([]CounterValue, error)
	// Record hands the latest values of counters to the ledger. It never
	// blocks; the ledger writes them in batches.
	Record(values []CounterValue)
}

// Options configure a Limiter. The zero value is usable.
type Options struct {
	// Ledger makes quota usage durable. Nil means quota counters start
	// at zero and live only in the Store.
	Ledger Ledger
	// Logf receives operational logs. Nil means log.Printf.
	Logf func(format string, args ...any)
	// Now is the breaker's clock. Nil means time.Now.
	Now func() time.Time

	// Name names the primary store in logs ("redis"). Empty means "store".
	Name string
	// FailureMode decides how a decision the primary store cannot make
	// is answered (config redis.failure_mode). The zero value is
	// FailureLocal.
	FailureMode FailureMode
	// Fallback returns a new, empty store to decide in FailureLocal mode,
	// typically func() limiter.Store { return memstore.New(nil) }. New
	// calls it, and so does a failure a minute or more after the last,
	// so each outage starts from the ledger rather than from counters an
	// earlier one left behind. The Limiter cannot make one itself (memstore imports
	// limiter), so FailureLocal requires it: nil makes an outage fail
	// closed, and the log line that reports the outage says why.
	// Ignored in the other modes.
	Fallback func() Store
	// LedgerTimeout bounds the ledger's Load when a decision seeds quota
	// counters; past it they start from zero, as when the ledger is
	// down. Zero means 1s.
	LedgerTimeout time.Duration
	// Timeout bounds every round trip to the primary store (config
	// redis.timeout); past it the failure mode applies. Zero means 50ms;
	// negative means no bound, for a store that cannot hang (memstore),
	// which spares every decision a timer.
	// Stores must honour ctx.
	Timeout time.Duration
	// TripAfter is how many consecutive failures of the primary open the
	// breaker. Zero means 3.
	TripAfter int
	// HoldRefusals, when positive, lets the Limiter refuse again by
	// itself, for up to this long, a request the primary refused, while
	// the limit that refused it is still full; see held. Zero means every
	// request goes to the store.
	HoldRefusals time.Duration
	// Backoff is how long the open breaker waits before it lets one
	// probe decision through to the primary; each failed probe doubles
	// the wait, up to MaxBackoff. Zero means 100ms; zero MaxBackoff
	// means 5s.
	Backoff, MaxBackoff time.Duration
}

// Limiter is the one decision point of the proxy: it asks the Store,
// seeds quota counters the Store lost from the Ledger, and hands every
// charged quota counter to the Ledger.
//
// # When the store fails
//
// The store given to New is the primary (Redis, shared by replicas). A
// round trip to it gives up after Options.Timeout, so a dead store never
// holds a request longer than that per round trip (a decision makes
// one round trip, or three when it seeds quota counters, with a ledger
// Load between, which gives up after Options.LedgerTimeout; five in the
// rare decision that meets the end of a period while seeding). A
// decision the primary fails
// follows Options.FailureMode:
//
//   - FailureLocal: a fallback store in this process decides, with the
//     same limits; its quota counters are seeded from the ledger and its
//     charged quota usage is recorded in the ledger.
//   - FailureOpen: the request is admitted with no statuses (so no
//     rate-limit headers) and nothing is charged.
//   - FailureClosed: Decide returns an error wrapping ErrUnavailable,
//     which the proxy answers with 503 limiter_unavailable.
//
// After Options.TripAfter consecutive failures a circuit breaker opens:
// decisions skip the primary and follow the failure mode at once, except
// one probe decision after Options.Backoff, then twice that, and so on up
// to Options.MaxBackoff. The first successful probe closes the breaker.
// Each opening and closing logs one line and is counted in State; nothing
// logs per request. Reads (cost 0) take the same path. Refund goes to the
// store that made the decision; while the breaker is open, a refund due
// to the primary fails at once with ErrUnavailable.
//
// Usage across an outage in FailureLocal mode, a known limit:
//
//   - Enforcement is per replica: N replicas together may admit up to N
//     times a limit.
//   - A run of failures that starts a minute or more after the last one
//     ended starts a new fallback: its rate windows start empty (usage
//     on the primary just before the outage is not seen), its quota
//     counters start from the ledger. Runs closer together share one, so
//     a primary that fails now and then lets the replica admit at most
//     about twice a limit (once on the primary, once in the fallback),
//     not a fresh limit per failure; the shared fallback's quota counters
//     then miss what the primary charged in between (under a minute's
//     use).
//   - When the primary returns, its quota counters are as it left them,
//     behind the ledger, which holds the usage decided locally. A ledger
//     that can raise them (quota.Recorder with a quota.Raiser)
//     does so at the first write of each that finds it behind: the
//     counter takes the larger of its own usage and the ledger's, so the
//     usage decided locally counts against the rest of the period, short
//     of what the primary charged before that write (about one flush
//     interval), or, when both sides charged much, the smaller side.
type Limiter struct {
	store         Store // the primary, bounded by the timeout
	ledger        Ledger
	logf          func(format string, args ...any)
	name          string
	mode          FailureMode
	timeout       time.Duration
	ledgerTimeout time.Duration
	br            breaker
	held          *held // nil unless Options.HoldRefusals

	ledgerLogged atomic.Int64 // when the ledger's failure was last logged

	pinger    Pinger     // the primary, when it can be pinged
	checkMu   sync.Mutex // guards checkedAt and checkErr
	checkedAt time.Time  // when Check last looked at the primary
	checkErr  error      // what it found
}

// New returns a Limiter deciding with store, its primary.
func New(store Store, o *Options) *Limiter {
	if o == nil {
		o = &Options{}
	}
	l := &Limiter{ledger: o.Ledger, logf: o.Logf, name: o.Name, mode: o.FailureMode, timeout: o.Timeout, ledgerTimeout: o.LedgerTimeout}
	l.pinger, _ = store.(Pinger)
	if l.logf == nil {
		l.logf = log.Printf
	}
	if l.ledgerTimeout <= 0 {
		l.ledgerTimeout = time.Second
	}
	if l.name == "" {
		l.name = "store"
	}
	switch {
	case l.timeout < 0:
		l.store = store
	case l.timeout == 0:
		l.timeout = 50 * time.Millisecond
		fallthrough
	default:
		l.store = bounded{Store: store, deadlines: newDeadlines(l.timeout)}
	}
	b := &l.br
	b.now, b.logf, b.name = o.Now, l.logf, l.name
	if b.now == nil {
		b.now = time.Now
	}
	b.since = b.now()
	b.tripAfter, b.minWait, b.maxWait = int64(o.TripAfter), o.Backoff, o.MaxBackoff
	if b.tripAfter <= 0 {
		b.tripAfter = 3
	}
	if b.minWait <= 0 {
		b.minWait = 100 * time.Millisecond
	}
	if b.maxWait <= 0 {
		b.maxWait = 5 * time.Second
	}
	b.maxWait = max(b.maxWait, b.minWait)
	l.held = newHeld(o.HoldRefusals, b.now)
	switch {
	case l.mode == FailureLocal && o.Fallback != nil:
		b.newFallback = o.Fallback
		s := o.Fallback()
		b.fallback.Store(&s)
		b.mode, b.failing = "fallback-local", "failing local: deciding in-process until it returns"
	case l.mode == FailureLocal:
		l.mode = FailureClosed
		b.mode, b.failing = "closed", "failing closed (failure mode local, but no fallback store): refusing every request until it returns"
	case l.mode == FailureOpen:
		b.mode, b.failing = "open", "failing open: admitting every request unlimited until it returns"
	default:
		l.mode = FailureClosed
		b.mode, b.failing = "closed", "failing closed: refusing every request until it returns"
	}
	return l
}

// State returns the health of the primary store.
func (l *Limiter) State() State {
	s := l.br.state()
	if l.held != nil {
		s.HeldRefusals = l.held.hits.Load()
	}
	return s
}

// FailureMode returns how the Limiter answers while its primary store
// is away.
func (l *Limiter) FailureMode() FailureMode { return l.mode }

// Pinger is a primary store that can say whether it answers without
// deciding anything (limiter/redisstore's Store: a Redis PING).
type Pinger interface {
	Ping(ctx context.Context) error
}

// checkEvery is the least time between two looks of Check at the
// primary; checks in between get the last result.
const checkEvery = time.Second

// probeLimits is what Check decides to probe an open breaker: a rate
// limit of its own, too high to refuse, charged 1.
var probeLimits = []Limit{{Name: "health", Key: "gaia-health", Window: time.Second, Limit: 1 << 50}}

// Check looks at the primary store for a health check, so that health
// follows the store when no request does (a readiness probe that took a
// replica out of service leaves no traffic to find the store back).
// While the breaker is closed it pings a Pinger primary: a failure
// counts against the breaker as a failed decision does, a success
// changes nothing (it says nothing about scripts or writes). While the
// breaker is open and a probe is due, it probes with a decision of its
// own (probeLimits), which closes the breaker as a request's probe
// does. It looks at most once per checkEvery, and returns the State and
// what the look found (nil: nothing wrong, or no look).
func (l *Limiter) Check(ctx context.Context) (State, error) {
	l.checkMu.Lock()
	defer l.checkMu.Unlock()
	if now := l.br.now(); l.checkedAt.IsZero() || now.Sub(l.checkedAt) >= checkEvery || now.Before(l.checkedAt) {
		err := l.check(ctx)
		if ctx.Err() != nil {
			// The caller left: that says nothing about the store, and
			// must not stand for the next second's callers.
			return l.State(), nil
		}
		l.checkedAt, l.checkErr = now, err
	}
	return l.State(), l.checkErr
}

func (l *Limiter) check(ctx context.Context) error {
	t, ok := l.br.admit()
	if !ok || !t.probe && l.pinger == nil {
		return nil // open with no probe due (State says so), or nothing to ping
	}
	var err error
	if t.probe {
		_, err = l.decide(ctx, l.store, probeLimits, 1)
	} else {
		err = l.ping(ctx)
	}
	switch {
	case err == nil && t.probe:
		l.br.succeed(t)
	case err == nil:
		// A good ping says nothing of scripts or writes: a run of failed
		// decisions stands.
	case ctx.Err() != nil:
		l.br.abandon(t)
	default:
		l.br.fail(t, err)
	}
	return err
}

// ping pings the primary, within the timeout.
func (l *Limiter) ping(ctx context.Context) error {
	if l.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.timeout)
		defer cancel()
	}
	return l.pinger.Ping(ctx)
}

// Decide checks and charges every limit of one request; see Store.Decide
// and, for what happens when the primary store fails, Limiter.
func (l *Limiter) Decide(ctx context.Context, limits []Limit, cost int64) (Decision, error) {
	if cost < 0 {
		return Decision{}, fmt.Errorf("limiter: negative cost %d", cost)
	}
	var start time.Time // when the primary was asked, for held refusals
	if l.held != nil {
		start = l.held.now()
		if d, ok := l.held.lookup(limits, cost, start); ok {
			return d, nil
		}
	}
	t, ok := l.br.admit()
	if !ok {
		return l.degraded(ctx, limits, cost, nil)
	}
	d, err := l.decide(ctx, l.store, limits, cost)
	switch {
	case err == nil:
		l.br.succeed(t)
		l.held.keep(limits, cost, start, &d)
		return d, nil
	case ctx.Err() != nil: // the caller went away; that says nothing about the store
		l.br.abandon(t)
		return d, err
	}
	l.br.fail(t, err)
	return l.degraded(ctx, limits, cost, err)
}

// degraded answers a decision the primary did not make, by the failure
// mode; cause is the primary's error, nil when it was skipped.
func (l *Limiter) degraded(ctx context.Context, limits []Limit, cost int64, cause error) (Decision, error) {
	switch l.mode {
	case FailureLocal:
		s := l.br.local()
		d, err := l.decide(ctx, s, limits, cost)
		d.by = s
		return d, err
	case FailureOpen:
		return Decision{Allowed: true}, nil
	}
	if cause == nil {
		cause = l.br.cause()
	}
	return Decision{}, fmt.Errorf("limiter: %w: %s: %w", ErrUnavailable, l.name, cause)
}

// decide asks s, seeding the quota counters it lacks from the ledger,
// and records charged quota counters.
func (l *Limiter) decide(ctx context.Context, s Store, limits []Limit, cost int64) (Decision, error) {
	d, err := s.Decide(ctx, limits, cost)
	// Seed at most twice: a period may end between a seed and the
	// decision after it, which then finds the next period's counter
	// missing. Missing a third time, counters are being evicted as fast
	// as they are seeded; seeding again could loop, so refuse to guess.
	for seeds := 0; err == nil && len(d.Missing) > 0 && seeds < 2; seeds++ {
		if err = l.seed(ctx, s, &d); err == nil {
			d, err = s.Decide(ctx, limits, cost)
		}
	}
	if err != nil {
		return d, err
	}
	if len(d.Missing) > 0 {
		return d, fmt.Errorf("limiter: quota counters vanished while seeding: %w", ErrUnavailable)
	}
	if cost > 0 {
		l.record(d.Statuses)
	}
	return d, nil
}

// seed loads the counters d reports missing from the ledger into s.
// When the ledger cannot answer, the counters start from what it still
// knows (values recorded but not yet written) or zero, rather than
// refusing traffic (SPEC §6: requests keep flowing, quotas
// keep being enforced from the hot path). Usually that is exact: a
// counter is missing because its period or its subject is new. Only when
// the hot path lost its data while the ledger is away does usage restart
// low, and the log says so.
func (l *Limiter) seed(ctx context.Context, s Store, d *Decision) error {
	counters := make([]Counter, len(d.Missing))
	for i, idx := range d.Missing {
		counters[i] = d.Statuses[idx].Counter
	}
	var values []CounterValue
	if l.ledger != nil {
		var err error
		if values, err = l.loadLedger(ctx, counters); err != nil {
			l.logLedgerDown(len(counters), err)
			if len(values) != len(counters) {
				values = nil
			}
		}
	}
	if values == nil {
		values = make([]CounterValue, len(counters))
	}
	for i := range values {
		values[i].Counter = counters[i]
	}
	return s.Seed(ctx, values)
}

// loadLedger reads counters from the ledger, waiting at most
// ledgerTimeout.
func (l *Limiter) loadLedger(ctx context.Context, counters []Counter) ([]CounterValue, error) {
	ctx, cancel := context.WithTimeout(ctx, l.ledgerTimeout)
	defer cancel()
	return l.ledger.Load(ctx, counters)
}

// logLedgerDown logs an unreadable ledger at most every ten seconds.
func (l *Limiter) logLedgerDown(n int, err error) {
	now := time.Now().UnixNano()
	last := l.ledgerLogged.Load()
	if now-last < int64(10*time.Second) || !l.ledgerLogged.CompareAndSwap(last, now) {
		return
	}
	l.logf("limiter: quota ledger unreadable, %d quota counters start from zero, or from what is recorded but not yet written: %v", n, err)
}

// record hands the quota counters of statuses to the ledger: charged
// ones, and also those of a refused request. Their value did not change,
// but if the process died before it flushed the charge that exhausted a
// quota, the refusals after a restart are what brings the ledger up to
// date (a value it already has is a no-op).
func (l *Limiter) record(statuses []Status) {
	if l.ledger == nil {
		return
	}
	var values []CounterValue
	for i := range statuses {
		s := &statuses[i]
		if s.Limit.Period != nil && s.Seq > 0 {
			values = append(values, CounterValue{Counter: s.Counter, Used: s.Used, Seq: s.Seq})
		}
	}
	if len(values) > 0 {
		l.ledger.Record(values)
	}
}

// Refund gives the cost back to the refundable quotas charged by d,
// after the upstream failed the request. It goes to the store that made
// d; to the primary it takes at most the timeout per round trip, and fails at once with
// ErrUnavailable while the breaker is open.
func (l *Limiter) Refund(ctx context.Context, d *Decision, cost int64) error {
	if !d.Allowed || cost <= 0 {
		return nil
	}
	var byCost, byRequest []Counter
	var refunded []Limit
	for i := range d.Statuses {
		s := &d.Statuses[i]
		switch {
		case s.refund(cost) == 0:
			continue
		case s.Limit.PerRequest:
			byRequest = append(byRequest, s.Counter)
		default:
			byCost = append(byCost, s.Counter)
		}
		refunded = append(refunded, s.Limit)
	}
	if len(refunded) == 0 {
		return nil
	}
	l.held.forget(refunded) // refunded units may free a held refusal sooner
	store := d.by
	if store == nil {
		if l.br.open.Load() {
			return fmt.Errorf("limiter: refund: %w: %s is down", ErrUnavailable, l.name)
		}
		store = l.store // bounded by the timeout
	}
	for _, r := range []struct {
		counters []Counter
		cost     int64
	}{{byCost, cost}, {byRequest, 1}} {
		if len(r.counters) == 0 {
			continue
		}
		values, err := store.Refund(ctx, r.counters, r.cost)
		if err != nil {
			return fmt.Errorf("limiter: refund: %w", err)
		}
		if l.ledger != nil && len(values) > 0 {
			l.ledger.Record(values)
		}
	}
	return nil
}

// Reset clears the rate windows and zeroes the quota usage of limits
// (an admin's reset of a subject), and records the zeroed quota counters
// in the ledger. Quota counters the store lacks are seeded from the
// ledger first, as Decide does, so the zero outranks the ledger's value.
// It goes to the store that decides now: the primary, or while the
// breaker is open the local fallback, and fails with ErrUnavailable in
// the other failure modes.
func (l *Limiter) Reset(ctx context.Context, limits []Limit) error {
	l.held.forget(limits)
	s := l.store
	if l.br.open.Load() {
		if l.mode != FailureLocal {
			return fmt.Errorf("limiter: reset: %w: %s is down", ErrUnavailable, l.name)
		}
		s = l.br.local()
	}
	if _, err := l.decide(ctx, s, limits, 0); err != nil { // seeds missing quota counters
		return fmt.Errorf("limiter: reset: %w", err)
	}
	values, err := s.Reset(ctx, limits)
	if err != nil {
		return fmt.Errorf("limiter: reset: %w", err)
	}
	if l.ledger != nil && len(values) > 0 {
		l.ledger.Record(l.outrank(ctx, values))
	}
	return nil
}

// outrank returns the zeroed counters of a reset, each with a Seq above
// the ledger's. A store behind the ledger (Redis restored from older
// data, or back after usage was decided by the fallback) gives a zero
// whose Seq the ledger already holds; the ledger would keep its usage
// and, finding itself ahead, have the store raised back to it, undoing
// the reset. With the higher Seq the zero lands, and the store's next
// value, behind it, is raised to the zero plus what it counts since. A
// ledger that cannot be read in time leaves values as they are.
func (l *Limiter) outrank(ctx context.Context, values []CounterValue) []CounterValue {
	counters := make([]Counter, len(values))
	for i, v := range values {
		counters[i] = v.Counter
	}
	led, err := l.loadLedger(ctx, counters)
	if err != nil || len(led) != len(values) {
		return values
	}
	for i := range values {
		values[i].Seq = max(values[i].Seq, led[i].Seq+1)
	}
	return values
}
