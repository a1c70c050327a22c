package redisstore

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// citem is a limit of a decide call.
type citem struct {
	ctr         int // its counter, in call.ctrs
	shadow, one bool
	cost, limit int64 // the cost it checks: the request's, or at most 1 (one)

	// The decision, read from the reply.
	exceeded, charged bool
	retry             int64 // when exceeded: µs when the cost fits, -1 never
}

// cctr is a counter of a decide call: a window, or a quota counter.
type cctr struct {
	rate  bool
	key   int      // its key in call.keys: its window string, or its first candidate
	nc    int      // candidate periods of a quota counter
	id    string   // a window's id in its string
	width int64    // a window's bucket width, µs
	first int      // the first limit naming it
	cost  int64    // what it is charged: the cost its first limit checks
	ends  [3]int64 // a quota counter's candidate period ends, µs

	// The decision, read from the reply: a window's total before the
	// request, newest bucket (where it charges), and that bucket minus
	// the oldest one holding units; a quota counter's used (-1: missing)
	// and seq before the request, and the candidate chosen.
	before, cb, oo int64
	seq, cand      int64
	same           int // the first counter with the same quota key
	charged        bool
}

// callPool holds decide calls whose callers are done with them: a call with
// room for a typical decision is over 1 KiB, most of what a decision
// allocates. Only a call whose result its caller has read goes back
// (release); one left behind by its caller stays with the worker.
var callPool = sync.Pool{New: func() any { return new(call) }}

// release puts decide call c, delivered and read, back for reuse.
func (c *call) release() {
	callPool.Put(c)
}

// decideCall returns the call deciding the limits of items idx. Its
// plan, the part of the request that its keys and time leave out, is the
// same for every request of one policy, and a script call carries it
// once.
func (s *Store) decideCall(limits []limiter.Limit, items []item, idx []int, cost int64) *call {
	n := len(idx)
	c := callPool.Get().(*call)
	*c = call{
		op:   'D',
		slot: items[idx[0]].slot,
		now:  -1,
		cost: cost,
		done: make(chan struct{}),
	}
	c.items, c.ctrs, c.keys = c.itemBuf[:0], c.ctrBuf[:0], c.keyBuf[:0]
	if n > len(c.itemBuf) {
		c.items, c.ctrs = make([]citem, 0, n), make([]cctr, 0, n)
	}
	c.items = c.items[:n]
	if s.now != nil {
		c.now = s.now().UnixMicro()
	}
	// Each limit's counter is that of the first limit naming it (root),
	// and a window's string that of the first window in it (owner).
	var rootBuf, ownerBuf [8]int
	root, owner := rootBuf[:0], ownerBuf[:0]
	for k, i := range idx {
		it := &items[i]
		root, owner = append(root, k), append(owner, k)
		for m := range k {
			om := &items[idx[m]]
			if it.rate != om.rate || root[m] != m {
				continue
			}
			if it.rate && it.key == om.key {
				owner[k] = owner[m]
				if it.id == om.id && it.width == om.width {
					root[k] = m
					break
				}
			}
			if !it.rate && limits[i].Key == limits[idx[m]].Key && sameCands(it, om) {
				root[k] = m
				break
			}
		}
	}
	// Counters: windows owner by owner, then quota counters.
	owners := 0
	for k := range idx {
		if !items[idx[k]].rate || owner[k] != k {
			continue
		}
		owners++
		key := len(c.keys)
		c.keys = append(c.keys, items[idx[k]].key)
		for m := k; m < n; m++ {
			if it := &items[idx[m]]; it.rate && owner[m] == k && root[m] == m {
				c.ctrs = append(c.ctrs, cctr{rate: true, key: key, id: it.id, width: it.width, first: m, cost: it.cost})
			}
		}
	}
	c.nw = len(c.ctrs)
	for k, i := range idx {
		if it := &items[i]; !it.rate && root[k] == k {
			c.ctrs = append(c.ctrs, cctr{key: len(c.keys), nc: it.nc, first: k, cost: it.cost})
			for _, q := range it.cand[:it.nc] {
				c.keys = append(c.keys, q.key)
			}
		}
	}
	for k, i := range idx {
		l := &limits[i]
		c.items[k] = citem{shadow: l.Shadow, one: l.PerRequest, cost: items[i].cost, limit: l.Limit}
		for j := range c.ctrs {
			if c.ctrs[j].first == root[k] {
				c.items[k].ctr = j
			}
		}
	}

	// The plan, as store.lua reads it.
	p := &c.plan
	p.b, p.f = c.planBuf[:0], c.fmtBuf[:0]
	p.u16(owners)
	p.u16(len(c.ctrs) - c.nw)
	p.u16(n)
	p.u16(c.nw)
	p.format("d", "dd", len(c.ctrs)) // a request's reply
	for j := 0; j < c.nw; {
		m := j
		size := 0
		for m < c.nw && c.ctrs[m].key == c.ctrs[j].key {
			size += 1 + len(c.ctrs[m].id) + 8
			m++
		}
		p.u16(m - j)
		// Its layout: the idg of each window, after its length.
		p.b = binary.LittleEndian.AppendUint16(p.b, uint16(size))
		for _, ct := range c.ctrs[j:m] {
			p.idg(ct.id, ct.width)
		}
		p.f = p.f[:len(p.f)-3*(m-j)]
		p.f = append(p.f, "Hc0"...)
		p.format("<HHc0d", "dddd", m-j)    // its headers
		p.format("<Hc0HHc0d", "dddd", m-j) // its string, before the histories
		j = m
	}
	for j := range c.ctrs[:c.nw] {
		ct := &c.ctrs[j]
		p.idg(ct.id, ct.width)
		p.num(ct.width)
		p.flag(c.items[ct.first].one)
	}
	for j := range c.ctrs[c.nw:] {
		ct := &c.ctrs[c.nw+j]
		it := &items[idx[ct.first]]
		p.flag(c.items[ct.first].one)
		p.u8(it.nc)
		for q := range 3 {
			if q < it.nc {
				ct.ends[q] = it.cand[q].end.UnixMicro()
			}
			p.num(ct.ends[q])
		}
	}
	for k := range idx {
		ci := &c.items[k]
		flags := 0
		if ci.shadow {
			flags |= 1
		}
		if ci.one {
			flags |= 2
		}
		p.u16(ci.ctr + 1)
		p.u8(flags)
		p.num(ci.limit)
	}
	return c
}

// values returns how many values the script unpacks for decide call c,
// its plan included.
func (c *call) values() int {
	owners := 0
	for j := range c.nw {
		if j == 0 || c.ctrs[j].key != c.ctrs[j-1].key {
			owners++
		}
	}
	return 5 + 4*owners + 3*c.nw + 5*(len(c.ctrs)-c.nw) + 3*len(c.items) + 3 + len(c.keys)
}

// sameCands reports whether quota items a and b have the same candidate
// periods.
func sameCands(a, b *item) bool {
	if a.nc != b.nc {
		return false
	}
	for j := range a.nc {
		if !a.cand[j].start.Equal(b.cand[j].start) || !a.cand[j].end.Equal(b.cand[j].end) {
			return false
		}
	}
	return true
}

// decode reads decide call c's decision from res, where the script's
// reply for it starts, and returns its length. The script reports the
// counters before the request; decode derives, as the script did, the
// periods chosen, which limits refused and what was charged.
func (c *call) decode(res string) (int, error) {
	r := reader{s: res}
	c.t = r.num()
	for j := range c.ctrs {
		ct := &c.ctrs[j]
		ct.charged = false
		ct.same = j
		if ct.rate {
			var x int64
			ct.before, x = r.num(), r.num()
			ct.oo = x % 64
			ct.cb = floorDiv(c.t, ct.width) + x/64
		} else {
			ct.before, ct.seq = r.num(), r.num()
			ct.cand = int64(ct.nc - 1)
			for q := range ct.nc - 1 {
				if c.t < ct.ends[q] {
					ct.cand = int64(q)
					break
				}
			}
		}
	}
	if r.err != nil {
		return 0, r.err
	}
	c.missing, c.allowed = false, false
	for j := c.nw; j < len(c.ctrs); j++ {
		ct := &c.ctrs[j]
		if ct.before < 0 {
			c.missing = true
		}
		// Two quotas naming one Key with different periods may land on
		// one counter: the script counts it once, as the first.
		for q := c.nw; q < j; q++ {
			if c.ctrs[q].same == q && c.keys[c.ctrs[q].key+int(c.ctrs[q].cand)] == c.keys[ct.key+int(ct.cand)] {
				ct.same = q
				break
			}
		}
	}
	if c.missing {
		return r.off, nil
	}
	allowed, shadowOK := true, true
	for k := range c.items {
		ci := &c.items[k]
		ci.charged, ci.retry = false, 0
		ct := &c.ctrs[c.ctrs[ci.ctr].same]
		ci.exceeded = ci.cost > ci.limit-ct.before
		if !ci.exceeded {
			continue
		}
		if ci.shadow {
			shadowOK = false
		} else {
			allowed = false
		}
		if ct.rate {
			ci.retry = r.num()
		}
	}
	if r.err != nil {
		return 0, r.err
	}
	c.allowed = allowed
	if allowed && c.cost > 0 {
		for k := range c.items {
			if ci := &c.items[k]; shadowOK || !ci.shadow {
				ci.charged = true
				c.ctrs[c.ctrs[ci.ctr].same].charged = true
			}
		}
	}
	return r.off, nil
}

// apply writes the decision of decide call c, for the limits of items
// idx, into the statuses of d. A missing quota counter adds its limits
// to d.Missing. now is the decision's local time.
func (s *Store) apply(d *limiter.Decision, limits []limiter.Limit, items []item, idx []int, c *call, now time.Time) {
	if s.now == nil {
		now = time.UnixMicro(c.t)
	}
	for k, i := range idx {
		ci := &c.items[k]
		ct := &c.ctrs[c.ctrs[ci.ctr].same]
		st := &d.Statuses[i]
		l, it := &limits[i], &items[i]
		var p *period
		if !it.rate {
			p = &it.cand[c.ctrs[ci.ctr].cand]
			st.Counter = limiter.Counter{Key: l.Key, Start: p.start}
		}
		if c.missing {
			if p != nil && c.ctrs[ci.ctr].before < 0 {
				d.Missing = append(d.Missing, i)
			}
			continue
		}
		st.Used = ct.before
		if ct.charged {
			st.Used += ct.cost
		}
		st.Remaining = max(l.Limit-st.Used, 0)
		st.Exceeded, st.Charged = ci.exceeded, ci.charged
		if p != nil {
			st.Seq = ct.seq
			if ct.charged {
				st.Seq++
			}
			st.Reset = p.end.Sub(now)
			if st.Exceeded {
				st.RetryAfter = st.Reset
			}
			continue
		}
		if st.Used > 0 {
			st.Reset = time.UnixMicro((ct.cb - ct.oo + limiter.Buckets + 1) * ct.width).Sub(now)
		}
		if st.Exceeded {
			if ci.retry < 0 {
				st.RetryAfter = l.Window
			} else {
				st.RetryAfter = time.UnixMicro(ci.retry).Sub(now)
			}
		}
	}
}

// undoCall returns the call that takes back the charges of decide call
// c (only those of counters charged by shadow limits alone, with
// onlyShadow), or nil when there is nothing to take back.
func (s *Store) undoCall(c *call, onlyShadow bool) *call {
	if c.items == nil || c.err != nil || c.missing || !c.allowed {
		return nil
	}
	u := &call{op: 'U', slot: c.slot, undone: make([]int64, len(c.items)), done: make(chan struct{})}
	for k := range u.undone {
		u.undone[k] = -1
	}
	var p packer
	n := 0
	for j := range c.ctrs {
		ct := &c.ctrs[j]
		if ct.same != j || !ct.charged {
			continue
		}
		enforced := false
		for k := range c.items {
			if ci := &c.items[k]; c.ctrs[ci.ctr].same == j && ci.charged && !ci.shadow {
				enforced = true
			}
		}
		if onlyShadow && enforced {
			continue
		}
		if ct.rate {
			u.keys = append(u.keys, c.keys[ct.key])
			p = p.u8(1).num(ct.cost).num(ct.cb).str(idg(ct.id, ct.width))
		} else {
			u.keys = append(u.keys, c.keys[ct.key+int(ct.cand)])
			p = p.u8(2).num(ct.cost).num(ct.seq + 1)
		}
		n++
		for k := range c.items {
			if c.ctrs[c.items[k].ctr].same == j {
				u.undone[k] = ct.cost
			}
		}
	}
	if n == 0 {
		return nil
	}
	u.blob = append(packer{}.u16(n), p...)
	s.once(u)
	return u
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
