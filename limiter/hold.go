package limiter

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// held remembers requests the primary store refused, so that while the
// limit that refused them is still full the same request is refused
// again here, without a round trip (Options.HoldRefusals). A caller who
// keeps knocking after a 429 then costs the shared store one decision
// per hold, not one per request.
//
// It never admits, so it cannot break a limit. It refuses only a
// request with the same limits and at least the same cost, and only
// until the refusing limit frees (its RetryAfter, counted from before
// the round trip, so never later than the store would) or the hold ends,
// whichever is first. What the hold can miss is usage freed early
// elsewhere: an admin reset or a refund through another replica shows
// here after at most one hold. A reset through this Limiter forgets the
// limits it resets at once.
type held struct {
	hold time.Duration
	now  func() time.Time

	mu        sync.RWMutex
	byKey     map[string]*refusal // by the Key of the refusing limit
	nextSweep int64               // when expired refusals go next, Unix ns; mu held
	entries   atomic.Int64        // len(byKey); zero spares every lookup
	hits      atomic.Int64        // decisions answered from here
}

// refusal is a held decision.
type refusal struct {
	limits []Limit
	cost   int64
	at     time.Time // when the round trip that decided it began
	until  time.Time
	d      Decision
}

// maxHeld bounds the refusals kept at once; past it new ones are not
// held (the store still decides them).
const maxHeld = 100_000

func newHeld(hold time.Duration, now func() time.Time) *held {
	if hold <= 0 {
		return nil
	}
	return &held{hold: hold, now: now, byKey: map[string]*refusal{}}
}

// lookup returns a held refusal of the request (limits, cost), as it
// stands at now.
func (h *held) lookup(limits []Limit, cost int64, now time.Time) (Decision, bool) {
	if h == nil || h.entries.Load() == 0 {
		return Decision{}, false
	}
	h.mu.RLock()
	var r *refusal
	for i := range limits {
		e := h.byKey[limits[i].Key]
		if e != nil && now.Before(e.until) && cost >= e.cost && slices.Equal(e.limits, limits) {
			r = e
			break
		}
	}
	h.mu.RUnlock()
	if r == nil {
		return Decision{}, false
	}
	h.hits.Add(1)
	return r.as(now), true
}

// keep holds d, the primary's refusal of (limits, cost) in a round trip
// that began at start. Reads (cost 0) are never refused, so never held.
func (h *held) keep(limits []Limit, cost int64, start time.Time, d *Decision) {
	if h == nil || d.Allowed || cost <= 0 {
		return
	}
	s := d.Refused()
	if s == nil || s.RetryAfter <= 0 {
		return
	}
	r := &refusal{
		limits: slices.Clone(limits),
		cost:   cost,
		at:     start,
		until:  start.Add(min(s.RetryAfter, h.hold)),
		d:      Decision{Statuses: slices.Clone(d.Statuses)},
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	// Expired refusals go once a hold; lookups pass them over meanwhile.
	if start.UnixNano() >= h.nextSweep {
		h.sweep(start)
	}
	if len(h.byKey) >= maxHeld {
		return
	}
	h.byKey[s.Limit.Key] = r
	h.entries.Store(int64(len(h.byKey)))
}

// forget drops the refusals by limits: a reset or a refund may have
// freed them.
func (h *held) forget(limits []Limit) {
	if h == nil || h.entries.Load() == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range limits {
		delete(h.byKey, l.Key)
	}
	h.entries.Store(int64(len(h.byKey)))
}

// sweep drops the refusals no longer held at now, and sets the next
// sweep a hold later. h.mu is held.
func (h *held) sweep(now time.Time) {
	for k, r := range h.byKey {
		if !now.Before(r.until) {
			delete(h.byKey, k)
		}
	}
	h.entries.Store(int64(len(h.byKey)))
	h.nextSweep = now.Add(h.hold).UnixNano()
}

// as returns the held decision as it stands at now: the times until
// limits free or periods end are shorter by the time since it was made.
func (r *refusal) as(now time.Time) Decision {
	elapsed := now.Sub(r.at)
	d := Decision{Statuses: make([]Status, len(r.d.Statuses))}
	for i, s := range r.d.Statuses {
		s.Reset = max(s.Reset-elapsed, 0)
		if s.Exceeded {
			s.RetryAfter = max(s.RetryAfter-elapsed, time.Nanosecond)
		}
		s.Charged = false
		d.Statuses[i] = s
	}
	return d
}
