package redisstore

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// call is one operation of the script on its way to Redis and back.
// Decide calls of one slot share one script call.
type call struct {
	op   byte     // 'D'ecide, 'U'ndo, 'S'eed or 'R'efund
	keys []string // the counters it names
	slot int      // their slot in a cluster, else 0
	blob packer   // the packed arguments of other operations than Decide

	// A decide call's request: now (µs; -1 means Redis TIME), cost, and
	// its limits.
	now, cost int64
	items     []citem
	// undone is, for an undo call, the cost taken back from the counter
	// of each item of the decide call it undoes, or -1.
	undone []int64

	res string // the script's reply, packed
	err error

	state atomic.Int32 // pending, delivered or abandoned
	done  chan struct{}
}

const (
	pending int32 = iota
	delivered
	abandoned
)

// citem is a limit of a decide call.
type citem struct {
	ki                 int // index of its (first candidate) key in call.keys
	nc                 int // number of candidate quota periods; 0 for a rate limit
	rate, shadow       bool
	limit, cost, width int64
	ends               [3]int64 // ends of the candidate periods, µs
}

// work sends the calls of the queue, a batch at a time, until Close.
func (s *Store) work() {
	defer s.workers.Done()
	batch := make([]*call, 0, s.maxBatch)
	cmds := make([]*redis.Cmd, s.maxBatch)
	for {
		select {
		case <-s.quit:
			return
		default:
		}
		select {
		case c := <-s.queue:
			batch = append(batch[:0], c)
		case <-s.quit:
			return
		}
	fill:
		for len(batch) < s.maxBatch {
			select {
			case c := <-s.queue:
				batch = append(batch, c)
			default:
				break fill
			}
		}
		s.exec(batch, cmds)
		clear(batch)
	}
}

// exec sends batch in one round trip: one script call per slot for its
// decide calls, one per other call, in one pipeline (or alone). Calls
// whose callers left are not sent.
func (s *Store) exec(batch []*call, cmds []*redis.Cmd) {
	ctx := context.Background()
	var (
		evals  []eval
		groups = map[int]int{} // slot: index in evals of its decide calls
	)
	for _, c := range batch {
		switch {
		case c.state.Load() == abandoned:
			c.deliver(s, "", context.Canceled)
		case c.op != 'D':
			evals = append(evals, eval{calls: []*call{c}})
		default:
			g, ok := groups[c.slot]
			if !ok || evals[g].nkeys+len(c.keys) > maxEvalKeys {
				g = len(evals)
				groups[c.slot] = g
				evals = append(evals, eval{})
			}
			evals[g].calls = append(evals[g].calls, c)
			evals[g].nkeys += len(c.keys)
		}
	}
	if len(evals) == 0 {
		return
	}
	for i := range evals {
		evals[i].build()
	}
	s.stats.roundTrips.Add(1)
	s.stats.calls.Add(int64(len(evals)))
	cmds = cmds[:len(evals)]
	run := func(only func(cmd *redis.Cmd) bool) {
		if len(evals) == 1 {
			e := &evals[0]
			cmds[0] = s.rdb.EvalSha(ctx, s.script.sha, e.keys, e.op, e.blob)
			return
		}
		pipe := s.rdb.Pipeline()
		for i, e := range evals {
			if only == nil || only(cmds[i]) {
				cmds[i] = pipe.EvalSha(ctx, s.script.sha, e.keys, e.op, e.blob)
			}
		}
		_, _ = pipe.Exec(ctx) // each command carries its own error
	}
	run(nil)
	if slices.ContainsFunc(cmds, func(cmd *redis.Cmd) bool { return isNoScript(cmd.Err()) }) && s.load(ctx) == nil {
		run(func(cmd *redis.Cmd) bool { return isNoScript(cmd.Err()) })
	}
	for i := range evals {
		res, err := cmds[i].Text()
		evals[i].deliver(s, res, err)
		cmds[i] = nil
	}
}

// maxEvalKeys bounds the keys of one script call, which the script
// reads with one MGET: Lua passes at most 8000 values to a C function.
const maxEvalKeys = 4000

// eval is one script call: one call other than Decide, or the decide
// calls of one slot.
type eval struct {
	calls []*call
	nkeys int // keys of calls, an upper bound of len(keys)
	op    string
	keys  []string
	blob  []byte
}

// build packs the calls of e into one script call.
func (e *eval) build() {
	c := e.calls[0]
	e.op = string(c.op)
	if c.op != 'D' {
		e.keys, e.blob = c.keys, c.blob
		return
	}
	n, size := 0, 2
	for _, c := range e.calls {
		n += len(c.keys)
		size += 34 + 29*len(c.items) + 10*len(c.keys)
	}
	e.keys = make([]string, 0, n)
	index := make(map[string]int, n)
	p := make(packer, 0, size).u16(len(e.calls))
	for _, c := range e.calls {
		rs, qs := rateSlack, quotaSlack
		if c.now >= 0 {
			rs, qs = rateSlackFake, quotaSlackFake
		}
		p = p.num(c.now).num(c.cost).num(rs.Milliseconds()).num(qs.Milliseconds()).u16(len(c.items))
		for i := range c.items {
			it := &c.items[i]
			shadow := 0
			if it.shadow {
				shadow = 1
			}
			key := func(j int) int {
				k := c.keys[it.ki+j]
				x, ok := index[k]
				if !ok {
					e.keys = append(e.keys, k)
					x = len(e.keys) // KEYS is 1-based
					index[k] = x
				}
				return x
			}
			if it.rate {
				p = p.u8(1).u8(shadow).num(it.limit).num(it.cost).num(it.width).u16(key(0))
				continue
			}
			p = p.u8(2).u8(shadow).num(it.limit).num(it.cost).u8(it.nc)
			for j := range it.nc {
				p = p.num(it.ends[j]).u16(key(j))
			}
		}
	}
	e.blob = p
}

// deliver splits res, the reply of e, among its calls.
func (e *eval) deliver(s *Store, res string, err error) {
	if err == nil && e.op == "D" {
		n := 0
		for _, c := range e.calls {
			n += replyHead + replyItem*len(c.items)
		}
		if n != len(res) {
			err = fmt.Errorf("redisstore: script replied %d bytes for %d decisions, want %d", len(res), len(e.calls), n)
		}
	}
	for _, c := range e.calls {
		if err != nil || e.op != "D" {
			c.deliver(s, res, err)
			continue
		}
		n := replyHead + replyItem*len(c.items)
		c.deliver(s, res[:n], nil)
		res = res[n:]
	}
}

// deliver hands the call its result. When its caller has left, charges
// it made are undone in the background.
func (c *call) deliver(s *Store, res string, err error) {
	c.res, c.err = res, err
	if c.state.CompareAndSwap(pending, delivered) {
		close(c.done)
		return
	}
	if err == nil && c.items != nil {
		s.undoLater(c)
	}
}

// abandon tells the worker that the caller left. It reports false when
// the result was already delivered.
func (c *call) abandon() bool {
	return c.state.CompareAndSwap(pending, abandoned)
}

func isNoScript(err error) bool {
	return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT")
}

// load loads the script into Redis (every master of a cluster).
func (s *Store) load(ctx context.Context) error {
	s.stats.loads.Add(1)
	sha, err := s.rdb.ScriptLoad(ctx, s.script.src).Result()
	if err != nil {
		s.logf("redisstore: script load: %v", err)
		return err
	}
	if sha != s.script.sha {
		s.logf("redisstore: script load: Redis named it %s, not %s", sha, s.script.sha)
	}
	return nil
}

// send queues c for a worker.
func (s *Store) send(ctx context.Context, c *call) error {
	select {
	case s.queue <- c:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.quit:
		return errClosed
	}
}

// wait waits for c's result. When ctx ends first, c is abandoned: a
// worker will not send it, or will undo its charges.
func (s *Store) wait(ctx context.Context, c *call) error {
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
	case <-s.quit:
	}
	if !c.abandon() {
		return nil // delivered meanwhile
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errClosed
}

// waitAll sends calls and waits for all their results. When ctx ends
// first, those not delivered are abandoned and the charges of those
// delivered are undone in the background.
func (s *Store) waitAll(ctx context.Context, calls []*call) error {
	sent := 0
	var err error
	for _, c := range calls {
		if err = s.send(ctx, c); err != nil {
			break
		}
		sent++
	}
	if err == nil {
		for _, c := range calls {
			if err = s.wait(ctx, c); err != nil {
				break
			}
		}
		if err == nil {
			return nil
		}
	}
	for _, c := range calls[:sent] {
		if !c.abandon() && c.state.Load() == delivered && c.err == nil && c.items != nil {
			s.undoLater(c)
		}
	}
	return err
}

// undoCall returns the call that takes back the charges of decide call
// c (only those of counters charged by shadow limits alone, with
// onlyShadow), or nil when there is nothing to take back.
func (s *Store) undoCall(c *call, onlyShadow bool) *call {
	if c.items == nil || len(c.res) != replyHead+replyItem*len(c.items) || replyFlag(c.res) != 1 {
		return nil
	}
	key := func(k int) string {
		cand := 0
		if _, flags, _, _, _ := replyAt(c.res, k); !c.items[k].rate {
			cand = int(flags / flagCand)
		}
		return c.keys[c.items[k].ki+cand]
	}
	charged := func(k int) bool {
		_, flags, _, _, _ := replyAt(c.res, k)
		return flags&flagCharged != 0
	}
	u := &call{op: 'U', slot: c.slot, undone: make([]int64, len(c.items)), done: make(chan struct{})}
	for k := range u.undone {
		u.undone[k] = -1
	}
	var p packer
	n := 0
	for k, it := range c.items {
		if u.undone[k] >= 0 {
			continue
		}
		kk := key(k)
		// The counter was charged the cost of its first limit, k, if any
		// of its limits was charged.
		var same []int
		was, enforced := false, false
		for m := k; m < len(c.items); m++ {
			if m == k || key(m) == kk {
				same = append(same, m)
				if charged(m) {
					was = true
					enforced = enforced || !c.items[m].shadow
				}
			}
		}
		if !was || (onlyShadow && enforced) {
			continue
		}
		_, _, _, _, x := replyAt(c.res, k) // bucket or seq
		kind := 2
		if it.rate {
			kind = 1
		}
		u.keys = append(u.keys, kk)
		p = p.u8(kind).num(it.cost).num(x)
		n++
		for _, m := range same {
			u.undone[m] = it.cost
		}
	}
	if n == 0 {
		return nil
	}
	u.blob = append(packer{}.u16(n), p...)
	return u
}

// undoWait sends undo calls and waits for them as long as ctx allows;
// they go on without it. Failures are logged: a charge that stays only
// makes the limits stricter.
func (s *Store) undoWait(ctx context.Context, undos []*call) {
	if len(undos) == 0 {
		return
	}
	s.stats.undone.Add(int64(len(undos)))
	for _, u := range undos {
		if err := s.send(context.WithoutCancel(ctx), u); err != nil {
			s.logf("redisstore: undo %q: %v", u.keys[0], err)
			return
		}
	}
	for _, u := range undos {
		if s.wait(ctx, u) != nil {
			return
		}
		if u.err != nil {
			s.logf("redisstore: undo %q: %v", u.keys[0], u.err)
		}
	}
}

// undoLater takes back the charges of decide call c, whose caller left,
// in the background.
func (s *Store) undoLater(c *call) {
	u := s.undoCall(c, false)
	if u == nil {
		return
	}
	s.stats.undone.Add(1)
	run := func() {
		ctx, cancel := context.WithTimeout(context.Background(), undoTimeout)
		defer cancel()
		err := s.rdb.EvalSha(ctx, s.script.sha, u.keys, "U", []byte(u.blob)).Err()
		if isNoScript(err) && s.load(ctx) == nil {
			err = s.rdb.EvalSha(ctx, s.script.sha, u.keys, "U", []byte(u.blob)).Err()
		}
		s.stats.calls.Add(1)
		s.stats.roundTrips.Add(1)
		if err != nil {
			s.logf("redisstore: undo %q: %v", u.keys[0], err)
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		run()
		return
	}
	s.bg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.bg.Done()
		run()
	}()
}
