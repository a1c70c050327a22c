// Package memstore is the in-process limiter.Store: the one a single
// gaia-proxy uses when no Redis is configured, or when Redis is away and
// the failure mode is "local".
//
// # Sliding windows
//
// A rate limit's window W is cut into buckets of width
// g = limiter.BucketWidth(W): W/limiter.Buckets rounded up to the
// microsecond, so that Buckets buckets always cover at least W. Time t,
// in microseconds since the Unix epoch, falls in bucket b(t) = floor(t/g).
// A request at t is checked against the sum of the Buckets+1 buckets
// b(t)-Buckets .. b(t) (the span), and when charged adds its cost to
// bucket b(t).
//
// Every admission in the closed interval [t-W, t] lies in a bucket of
// the span at t, because b(t-W) >= b(t)-Buckets when W <= Buckets*g. So
// no interval of length W ever holds more than Limit. A unit leaves the
// span at most (Buckets+1)*g after it was charged, so a caller that keeps
// asking is admitted about Buckets/(Buckets+1) (98%) of Limit per W.
//
// Each rate counter (a Key and a window) keeps a ring of Buckets+1
// counters, their running total, the newest bucket number and the oldest
// bucket holding units, about 450 bytes, so a decision costs O(1)
// amortised. Should the clock step back, a request
// counts in the newest bucket, which only makes the limit stricter.
//
// Status fields of a rate limit: Reset is the time until the oldest
// counted unit leaves the span (0 when nothing is counted). RetryAfter
// walks the buckets from the oldest until enough units have left for the
// cost to fit; a cost above Limit never fits, and gets the window length.
//
// # Quotas
//
// A Quota is a counter per (Key, period start), the period coming from
// Limit.Period.Bounds(now). A counter the store does not hold is Missing
// until Seed sets it. Seq grows by one with every charge, refund and
// reset.
// Reset and RetryAfter are the time until the period ends.
//
// # Decisions
//
// Enforced limits decide; shadow limits are charged only when the request
// is allowed and every shadow limit would pass as well. A refused request
// charges nothing, and a cost of 0 reads without charging (and creates no
// state). Limits of one request that name the same counter (same Key and
// window, or same Key and period) are checked against it and charge it
// once.
//
// # Concurrency and memory
//
// Counters live in 64 shards chosen by a hash of the Key's hash tag
// ("{user:alice}"), so the counters of one subject share a shard. A
// decision locks every shard it touches in ascending order, so decisions
// on distinct subjects run in parallel and never deadlock.
//
// Idle state is evicted: a rate counter once all its buckets have left
// the span, a quota counter once its period has ended or it has not been
// used for 10 minutes. The ledger holds its value and the Limiter seeds
// it again; without a ledger, an idle quota starts again from zero.
// Decisions sweep the shards in turn, one at most every 1/64 minute of
// the injected clock, so each shard is swept about once a minute while
// decisions come, and the cost is spread over them.
package memstore

import (
	"context"
	"errors"
	"hash/maphash"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

const (
	numShards = 64
	// span is how many buckets a decision sums.
	span = limiter.Buckets + 1
	// sweepEvery is how often each shard is swept for idle counters.
	sweepEvery = time.Minute
	// quotaIdle is how long an unused quota counter is kept.
	quotaIdle = 10 * time.Minute
)

// Store is an in-process limiter.Store. The zero value is not usable;
// call New.
type Store struct {
	now  func() time.Time
	seed maphash.Seed

	nextSweep atomic.Int64 // Unix nanoseconds
	cursor    atomic.Uint32

	shards [numShards]shard
}

var _ limiter.Store = (*Store)(nil)

type shard struct {
	mu     sync.Mutex
	rates  map[rateKey]*window
	quotas map[quotaKey]*counter
	_      [40]byte // keep shards on separate cache lines
}

// rateKey names a sliding window: a limit Key and its bucket width.
type rateKey struct {
	key   string
	width int64 // microseconds
}

// quotaKey names a quota counter: a limit Key and its period start.
type quotaKey struct {
	key   string
	start int64 // Unix nanoseconds
}

// window is the state of one sliding window.
type window struct {
	head   int64 // newest bucket number
	oldest int64 // oldest bucket number holding units, when total > 0
	total  int64 // sum of ring
	ring   [span]int64
}

// counter is the state of one quota counter.
type counter struct {
	used, seq int64
	end       int64 // Unix nanoseconds of the period end; 0 until a Decide saw it
	last      int64 // Unix nanoseconds of the last use
}

// New returns an empty Store reading time from now; nil means time.Now.
func New(now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	s := &Store{now: now, seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].rates = make(map[rateKey]*window)
		s.shards[i].quotas = make(map[quotaKey]*counter)
	}
	return s
}

// Len returns how many counters the store holds, rate windows and quota
// counters together.
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.rates) + len(sh.quotas)
		sh.mu.Unlock()
	}
	return n
}

// shardOf returns the shard of key, chosen by its hash tag as Redis
// Cluster chooses a slot: the part between the first "{" and the next
// "}", when not empty, else the whole key. The counters of one subject
// share a tag, so a request usually locks one shard for all of them.
func (s *Store) shardOf(key string) uint {
	return uint(maphash.String(s.seed, hashTag(key)) % numShards)
}

func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// lock locks the shards in mask in ascending order.
func (s *Store) lock(mask uint64) {
	for m := mask; m != 0; m &= m - 1 {
		s.shards[bits.TrailingZeros64(m)].mu.Lock()
	}
}

// lockKeys locks the shards of the keys of xs (key gives each one's),
// in ascending order, and returns their mask for unlock.
func lockKeys[T any](s *Store, xs []T, key func(*T) string) uint64 {
	var mask uint64
	for i := range xs {
		mask |= 1 << s.shardOf(key(&xs[i]))
	}
	s.lock(mask)
	return mask
}

func counterKey(v *limiter.CounterValue) string { return v.Key }

// counterOf returns the quota counter c, or nil when the store does not
// hold it; c's shard is locked.
func (s *Store) counterOf(c limiter.Counter) *counter {
	return s.shards[s.shardOf(c.Key)].quotas[quotaKey{key: c.Key, start: c.Start.UnixNano()}]
}

func (s *Store) unlock(mask uint64) {
	for m := mask; m != 0; m &= m - 1 {
		s.shards[bits.TrailingZeros64(m)].mu.Unlock()
	}
}

// item is the working state of one limit during a decision.
type item struct {
	shard uint
	root  int // index of the first item naming the same counter
	quota bool

	rk rateKey
	b  int64 // bucket number of now
	w  *window

	qk  quotaKey
	end int64 // Unix nanoseconds of the period end
	c   *counter

	cost int64 // units this limit charges: the request's cost, or 1 for PerRequest
	used int64 // before this decision's charge
	done bool  // the counter was charged (on the root item)
}

// sameCounter reports whether a and b name the same counter.
func sameCounter(a, b *item) bool {
	if a.shard != b.shard || a.quota != b.quota {
		return false
	}
	if a.quota {
		return a.qk == b.qk
	}
	return a.rk == b.rk
}

var errNegativeCost = errors.New("memstore: negative cost")

// Decide implements limiter.Store.
func (s *Store) Decide(_ context.Context, limits []limiter.Limit, cost int64) (limiter.Decision, error) {
	if cost < 0 {
		return limiter.Decision{}, errNegativeCost
	}
	now := s.now()
	nowNs := now.UnixNano()
	nowUs := now.UnixMicro()
	d := limiter.Decision{Statuses: make([]limiter.Status, len(limits))}

	var buf [8]item
	items := buf[:0]
	if len(limits) > len(buf) {
		items = make([]item, 0, len(limits))
	}
	var mask uint64
	for i := range limits {
		l := &limits[i]
		st := &d.Statuses[i]
		st.Limit = *l
		it := item{shard: s.shardOf(l.Key), root: i, cost: cost}
		if l.PerRequest {
			it.cost = min(cost, 1)
		}
		if l.Period != nil {
			start, end := l.Period.Bounds(now)
			st.Counter = limiter.Counter{Key: l.Key, Start: start}
			it.quota = true
			it.qk = quotaKey{key: l.Key, start: start.UnixNano()}
			it.end = end.UnixNano()
		} else {
			it.rk = rateKey{key: l.Key, width: limiter.BucketWidth(l.Window).Microseconds()}
			it.b = floorDiv(nowUs, it.rk.width)
		}
		for j := range items {
			if sameCounter(&items[j], &it) {
				it.root = items[j].root
				break
			}
		}
		items = append(items, it)
		mask |= 1 << it.shard
	}

	s.lock(mask)
	// Look the counters up; a missing quota counter stops the decision.
	for i := range items {
		it := &items[i]
		sh := &s.shards[it.shard]
		if it.quota {
			if it.c = sh.quotas[it.qk]; it.c == nil {
				d.Missing = append(d.Missing, i)
			}
		} else {
			it.w = sh.rates[it.rk]
		}
	}
	if len(d.Missing) > 0 {
		s.unlock(mask)
		return d, nil
	}

	// Check every limit against its usage before this request.
	allowed, shadowOK := true, true
	for i := range items {
		it := &items[i]
		l := &limits[i]
		if it.quota {
			it.c.last = nowNs
			it.c.end = it.end
			it.used = it.c.used
		} else if it.w != nil {
			it.b = it.w.advance(it.b)
			it.used = it.w.total
		}
		if it.cost > l.Limit-it.used { // it.used+cost > l.Limit, without overflow
			st := &d.Statuses[i]
			st.Exceeded = true
			st.RetryAfter = it.retryAfter(l, it.cost, nowNs)
			if l.Shadow {
				shadowOK = false
			} else {
				allowed = false
			}
		}
	}
	d.Allowed = allowed

	// Charge, each counter once.
	if allowed && cost > 0 {
		for i := range items {
			if limits[i].Shadow && !shadowOK {
				continue
			}
			d.Statuses[i].Charged = true
			r := &items[items[i].root]
			if r.done {
				continue
			}
			r.done = true
			switch {
			case r.quota:
				r.c.used += r.cost
				r.c.seq++
			case r.w == nil:
				r.w = &window{head: r.b, oldest: r.b}
				s.shards[r.shard].rates[r.rk] = r.w
				fallthrough
			default:
				r.w.add(r.b, r.cost)
			}
		}
	}

	// Report the state after the charge.
	for i := range items {
		it := &items[i]
		st := &d.Statuses[i]
		l := &limits[i]
		if it.quota {
			st.Used = it.c.used
			st.Seq = it.c.seq
			st.Reset = time.Duration(it.end - nowNs)
		} else if w := items[it.root].w; w != nil {
			st.Used = w.total
			if w.total > 0 {
				st.Reset = time.Duration(leaves(w.oldest, it.rk.width) - nowNs)
			}
		}
		st.Remaining = max(l.Limit-st.Used, 0)
	}
	s.unlock(mask)

	s.maybeSweep(nowNs)
	return d, nil
}

// retryAfter returns the time until cost fits limit l, before any charge
// of this decision.
func (it *item) retryAfter(l *limiter.Limit, cost, nowNs int64) time.Duration {
	if it.quota {
		return time.Duration(it.end - nowNs)
	}
	if cost > l.Limit || it.w == nil {
		return l.Window
	}
	need := it.used + cost - l.Limit
	w := it.w
	var freed int64
	for b := w.oldest; b <= w.head; b++ {
		freed += w.ring[slot(b)]
		if freed >= need {
			return time.Duration(leaves(b, it.rk.width) - nowNs)
		}
	}
	return l.Window // unreachable: need <= total
}

// leaves returns when bucket b leaves the span, in Unix nanoseconds.
func leaves(b, width int64) int64 {
	return (b + span) * width * int64(time.Microsecond)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func slot(b int64) int {
	m := b % span
	if m < 0 {
		m += span
	}
	return int(m)
}

// advance moves the window to bucket b, dropping the buckets that leave
// the span, and returns the bucket a charge at b goes to: b, or the
// newest bucket when the clock stepped back.
func (w *window) advance(b int64) int64 {
	if b <= w.head {
		return w.head
	}
	if w.total == 0 || b-w.head >= span {
		if w.total != 0 {
			w.ring = [span]int64{}
		}
		w.total, w.head = 0, b
		return b
	}
	for k := w.head + 1; k <= b; k++ {
		i := slot(k)
		w.total -= w.ring[i]
		w.ring[i] = 0
	}
	w.head = b
	if w.total > 0 && w.oldest <= b-span {
		k := b - limiter.Buckets
		for w.ring[slot(k)] == 0 {
			k++
		}
		w.oldest = k
	}
	return b
}

// add charges cost to bucket b, which must be the head.
func (w *window) add(b, cost int64) {
	if w.total == 0 {
		w.oldest = b
	}
	w.ring[slot(b)] += cost
	w.total += cost
}

// Seed implements limiter.Store.
func (s *Store) Seed(_ context.Context, values []limiter.CounterValue) error {
	nowNs := s.now().UnixNano()
	mask := lockKeys(s, values, counterKey)
	for i := range values {
		v := &values[i]
		sh := &s.shards[s.shardOf(v.Key)]
		k := quotaKey{key: v.Key, start: v.Start.UnixNano()}
		if _, ok := sh.quotas[k]; !ok {
			sh.quotas[k] = &counter{used: v.Used, seq: v.Seq, last: nowNs}
		}
	}
	s.unlock(mask)
	s.maybeSweep(nowNs)
	return nil
}

// Raise brings quota counters that are behind the ledger up to it, and
// returns those it changed: one whose seq is below the ledger's, or
// equal with other usage, takes the larger usage and a seq above both
// (quota.Raiser). A counter restarted from zero because the ledger could
// not be read when it was seeded is such a counter. Counters the store
// does not hold are left alone.
func (s *Store) Raise(_ context.Context, ledger []limiter.CounterValue) ([]limiter.CounterValue, error) {
	var raised []limiter.CounterValue
	mask := lockKeys(s, ledger, counterKey)
	for _, v := range ledger {
		c := s.counterOf(v.Counter)
		if c == nil || c.seq > v.Seq || (c.seq == v.Seq && c.used == v.Used) {
			continue
		}
		c.used, c.seq = max(c.used, v.Used), max(c.seq, v.Seq)+1
		raised = append(raised, limiter.CounterValue{Counter: v.Counter, Used: c.used, Seq: c.seq})
	}
	s.unlock(mask)
	return raised, nil
}

// Refund implements limiter.Store. A counter listed twice is refunded
// once, as Decide charged it once.
func (s *Store) Refund(_ context.Context, counters []limiter.Counter, cost int64) ([]limiter.CounterValue, error) {
	if cost < 0 {
		return nil, errNegativeCost
	}
	if cost == 0 || len(counters) == 0 {
		return nil, nil
	}
	nowNs := s.now().UnixNano()
	var values []limiter.CounterValue
	mask := lockKeys(s, counters, func(c *limiter.Counter) string { return c.Key })
	for i, c := range counters {
		if slices.ContainsFunc(counters[:i], c.Is) {
			continue
		}
		e := s.counterOf(c)
		if e == nil || (e.end != 0 && nowNs >= e.end) {
			continue
		}
		e.used = max(e.used-cost, 0)
		e.seq++
		e.last = nowNs
		values = append(values, limiter.CounterValue{Counter: c, Used: e.used, Seq: e.seq})
	}
	s.unlock(mask)
	return values, nil
}

// Reset implements limiter.Store: rate windows are dropped, held quota
// counters of the current period set to zero.
func (s *Store) Reset(_ context.Context, limits []limiter.Limit) ([]limiter.CounterValue, error) {
	now := s.now()
	nowNs := now.UnixNano()
	var values []limiter.CounterValue
	mask := lockKeys(s, limits, func(l *limiter.Limit) string { return l.Key })
	for _, l := range limits {
		sh := &s.shards[s.shardOf(l.Key)]
		if l.Period == nil {
			delete(sh.rates, rateKey{key: l.Key, width: limiter.BucketWidth(l.Window).Microseconds()})
			continue
		}
		start, _ := l.Period.Bounds(now)
		c := sh.quotas[quotaKey{key: l.Key, start: start.UnixNano()}]
		ctr := limiter.Counter{Key: l.Key, Start: start}
		if c == nil || slices.ContainsFunc(values, func(v limiter.CounterValue) bool { return v.Is(ctr) }) {
			continue
		}
		c.used, c.last = 0, nowNs
		c.seq++
		values = append(values, limiter.CounterValue{Counter: ctr, Seq: c.seq})
	}
	s.unlock(mask)
	return values, nil
}

// maybeSweep sweeps the next shard when its turn has come: one shard per
// sweepEvery/numShards of the clock, so the cost is spread over decisions.
func (s *Store) maybeSweep(nowNs int64) {
	next := s.nextSweep.Load()
	if nowNs < next || !s.nextSweep.CompareAndSwap(next, nowNs+int64(sweepEvery/numShards)) {
		return
	}
	sh := &s.shards[s.cursor.Add(1)%numShards]
	sh.mu.Lock()
	sh.sweep(nowNs)
	sh.mu.Unlock()
}

// sweep evicts the idle counters of sh.
func (sh *shard) sweep(nowNs int64) {
	nowUs := nowNs / int64(time.Microsecond)
	for k, w := range sh.rates {
		if w.total == 0 || floorDiv(nowUs, k.width)-w.head >= span {
			delete(sh.rates, k)
		}
	}
	for k, c := range sh.quotas {
		if (c.end != 0 && nowNs >= c.end) || nowNs-c.last >= int64(quotaIdle) {
			delete(sh.quotas, k)
		}
	}
}
