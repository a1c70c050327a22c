package limiter

import (
	"context"
	"errors"
	"slices"
	"time"
)

// ErrUnavailable reports that the limiter's backend cannot decide right
// now (Redis away, breaker open). What happens then is the configured
// failure mode's business, not the caller's guess.
var ErrUnavailable = errors.New("rate limiter unavailable")

// Store keeps limiter state. Implementations are safe for concurrent use
// and implement the sliding window described at Buckets.
type Store interface {
	// Decide checks every limit of one request and, only if all enforced
	// (non-shadow) limits pass, charges cost to each of them (1 to
	// PerRequest limits): atomically. A refused request charges nothing.
	//
	// Shadow limits never refuse. They are charged only when they would
	// all have passed too, so they count what real limits would have
	// admitted.
	//
	// Limits naming the same counter (equal Key and Window, or equal Key
	// and period) are each checked against it, and it is charged once.
	//
	// A Quota whose counter the store does not hold (first use, restart,
	// data lost) is listed in Decision.Missing; then nothing is decided or
	// charged, and the caller seeds the counter from the durable ledger
	// (Seed) and asks again. A cost of 0 reads usage without charging.
	Decide(ctx context.Context, limits []Limit, cost int64) (Decision, error)

	// Seed sets the usage of Quota counters that the store does not hold
	// yet; counters it holds are left alone, so racing seeders are safe.
	Seed(ctx context.Context, counters []CounterValue) error

	// Refund gives cost back to Quota counters charged by an earlier
	// decision and returns their new values. Counters the store no longer
	// holds (period over, evicted) are skipped, and a counter listed twice
	// is refunded once.
	Refund(ctx context.Context, counters []Counter, cost int64) ([]CounterValue, error)

	// Reset clears the rate windows of limits, and sets the usage of
	// their Quota counters (of the period holding now) to zero with Seq
	// one higher, so that a ledger keeping the highest Seq takes the
	// zero; it returns those counters' new values. Quota counters the
	// store does not hold are skipped: the Limiter seeds them first. A
	// counter named twice is reset once.
	Reset(ctx context.Context, limits []Limit) ([]CounterValue, error)
}

// Counter names one Quota counter: a limit's Key in the period that
// starts at Start.
type Counter struct {
	Key   string
	Start time.Time
}

// Is reports whether c and o are the same counter (the same key and
// period start, whatever the time's location).
func (c Counter) Is(o Counter) bool { return c.Key == o.Key && c.Start.Equal(o.Start) }

// CounterValue is a Quota counter's absolute usage. Seq grows by one with
// every change of Used in the hot path, so a ledger that keeps the value
// with the highest Seq is exact whatever order writes arrive in.
type CounterValue struct {
	Counter
	Used int64
	Seq  int64
}

// Status is the state of one limit after a decision.
type Status struct {
	Limit Limit
	// Used is the usage counted in the window or period, including this
	// request's cost when it was charged.
	Used int64
	// Remaining is Limit minus Used, never below zero.
	Remaining int64
	// Reset is, for a Rate limit, the time until at least one unit frees
	// (0 when nothing is used); for a Quota, the time until its period ends.
	Reset time.Duration
	// Exceeded reports that this limit refused the request (or, for a
	// shadow limit, would have).
	Exceeded bool
	// Charged reports that the decision charged its cost to this limit.
	Charged bool
	// RetryAfter is, when Exceeded, the time until the request's cost
	// would fit.
	RetryAfter time.Duration
	// Counter and Seq identify a Quota's counter and its version after
	// the decision; zero for Rate limits.
	Counter Counter
	Seq     int64
}

// Decision is the outcome of Store.Decide, with one Status per limit in
// the order the limits were given. Quota statuses carry their Counter even
// when the counter is Missing.
type Decision struct {
	Allowed  bool
	Statuses []Status
	// Missing lists the indexes of Quota limits whose counters the store
	// does not hold. When it is not empty nothing was decided.
	Missing []int

	// by is the fallback store that made the decision, for Refund; nil
	// means the Limiter's primary store.
	by Store
}

// refund returns what Limiter.Refund gives back to s's counter after a
// request of cost failed: cost, or 1 for a PerRequest limit; 0 for a
// limit it leaves alone (a rate limit, or a quota not refundable or not
// charged).
func (s *Status) refund(cost int64) int64 {
	switch {
	case !s.Limit.Refundable || s.Limit.Period == nil || !s.Charged:
		return 0
	case s.Limit.PerRequest:
		return 1
	}
	return cost
}

// AfterRefund returns d as a successful Limiter.Refund(d, cost) leaves
// its quotas: the refundable ones d charged, with their units given
// back; false when there are none. d itself is unchanged.
func (d *Decision) AfterRefund(cost int64) (Decision, bool) {
	out := *d
	if !d.Allowed || cost <= 0 {
		return out, false
	}
	changed := false
	for i := range d.Statuses {
		back := d.Statuses[i].refund(cost)
		if back == 0 {
			continue
		}
		if !changed {
			out.Statuses, changed = slices.Clone(d.Statuses), true
		}
		s := &out.Statuses[i]
		s.Used = max(0, s.Used-back)
		s.Remaining = max(0, s.Limit.Limit-s.Used)
		s.Charged = false
	}
	return out, changed
}

// Refused returns the enforced limit that refused the request, preferring
// the one that frees last, or nil when the request was allowed.
func (d *Decision) Refused() *Status {
	var worst *Status
	for i := range d.Statuses {
		s := &d.Statuses[i]
		if s.Exceeded && !s.Limit.Shadow && (worst == nil || s.RetryAfter > worst.RetryAfter) {
			worst = s
		}
	}
	return worst
}

// ShadowLimited returns the names of shadow limits that would have
// refused the request.
func (d *Decision) ShadowLimited() []string {
	var names []string
	for i := range d.Statuses {
		if s := &d.Statuses[i]; s.Exceeded && s.Limit.Shadow {
			names = append(names, s.Limit.Name)
		}
	}
	return names
}
