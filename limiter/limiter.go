package limiter

import (
	"context"
	"fmt"
	"log"
	"sync/atomic"
	"time"
)

// Ledger is the durable record of quota usage behind a Store.
// quota.Recorder implements it.
type Ledger interface {
	// Load returns the durable value of each counter (zero for counters
	// it never saw), including values recorded but not yet written.
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
}

// Limiter is the one decision point of the proxy: it asks the Store,
// seeds quota counters the Store lost from the Ledger, and hands every
// charged quota counter to the Ledger.
type Limiter struct {
	store  Store
	ledger Ledger
	logf   func(format string, args ...any)

	ledgerLogged atomic.Int64 // when the ledger's failure was last logged
}

// New returns a Limiter deciding with store.
func New(store Store, o *Options) *Limiter {
	if o == nil {
		o = &Options{}
	}
	l := &Limiter{store: store, ledger: o.Ledger, logf: o.Logf}
	if l.logf == nil {
		l.logf = log.Printf
	}
	return l
}

// Decide checks and charges every limit of one request; see Store.Decide.
func (l *Limiter) Decide(ctx context.Context, limits []Limit, cost int64) (Decision, error) {
	d, err := l.store.Decide(ctx, limits, cost)
	if err == nil && len(d.Missing) > 0 {
		if err = l.seed(ctx, &d); err == nil {
			d, err = l.store.Decide(ctx, limits, cost)
		}
	}
	if err != nil {
		return d, err
	}
	if len(d.Missing) > 0 {
		// Another decision evicted the counter between Seed and Decide;
		// seeding again could loop, so refuse to guess.
		return d, fmt.Errorf("limiter: quota counters vanished while seeding: %w", ErrUnavailable)
	}
	if d.Allowed && cost > 0 {
		l.record(d.Statuses)
	}
	return d, nil
}

// seed loads the counters d reports missing from the ledger into the
// store. When the ledger cannot answer, the counters start from zero
// rather than refusing traffic (SPEC §6: requests keep flowing, quotas
// keep being enforced from the hot path). Usually that is exact: a
// counter is missing because its period or its subject is new. Only when
// the hot path lost its data while the ledger is away does usage restart
// low, and the log says so.
func (l *Limiter) seed(ctx context.Context, d *Decision) error {
	counters := make([]Counter, len(d.Missing))
	for i, idx := range d.Missing {
		counters[i] = d.Statuses[idx].Counter
	}
	var values []CounterValue
	if l.ledger != nil {
		var err error
		if values, err = l.ledger.Load(ctx, counters); err != nil {
			l.logLedgerDown(len(counters), err)
			values = nil
		}
	}
	if values == nil {
		values = make([]CounterValue, len(counters))
	}
	for i := range values {
		values[i].Counter = counters[i]
	}
	return l.store.Seed(ctx, values)
}

// logLedgerDown logs an unreadable ledger at most every ten seconds.
func (l *Limiter) logLedgerDown(n int, err error) {
	now := time.Now().UnixNano()
	last := l.ledgerLogged.Load()
	if now-last < int64(10*time.Second) || !l.ledgerLogged.CompareAndSwap(last, now) {
		return
	}
	l.logf("limiter: quota ledger unreadable, %d quota counters start from zero: %v", n, err)
}

// record hands the quota counters of statuses to the ledger.
func (l *Limiter) record(statuses []Status) {
	if l.ledger == nil {
		return
	}
	var values []CounterValue
	for i := range statuses {
		s := &statuses[i]
		if s.Limit.Period != nil && s.Charged {
			values = append(values, CounterValue{Counter: s.Counter, Used: s.Used, Seq: s.Seq})
		}
	}
	if len(values) > 0 {
		l.ledger.Record(values)
	}
}

// Refund gives the cost back to the refundable quotas charged by d,
// after the upstream failed the request.
func (l *Limiter) Refund(ctx context.Context, d *Decision, cost int64) error {
	if !d.Allowed || cost <= 0 {
		return nil
	}
	var byCost, byRequest []Counter
	for i := range d.Statuses {
		s := &d.Statuses[i]
		switch {
		case !s.Limit.Refundable || s.Limit.Period == nil || !s.Charged:
		case s.Limit.PerRequest:
			byRequest = append(byRequest, s.Counter)
		default:
			byCost = append(byCost, s.Counter)
		}
	}
	for _, r := range []struct {
		counters []Counter
		cost     int64
	}{{byCost, cost}, {byRequest, 1}} {
		if len(r.counters) == 0 {
			continue
		}
		values, err := l.store.Refund(ctx, r.counters, r.cost)
		if err != nil {
			return fmt.Errorf("limiter: refund: %w", err)
		}
		if l.ledger != nil && len(values) > 0 {
			l.ledger.Record(values)
		}
	}
	return nil
}
