package redisstore

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// call is one operation of the script on its way to Redis and back.
// Decide calls of one slot share one script call.
type call struct {
	op   byte     // 'D'ecide, 'U'ndo, 'S'eed, 'R'efund or reset ('X')
	keys []string // the keys it names
	slot int      // their slot in a cluster, else 0
	blob packer   // the packed arguments of other operations than Decide

	// A decide call's request: its plan, now (µs; -1 means Redis TIME),
	// cost, limits and counters; see decide.go.
	plan      wire
	now, cost int64
	items     []citem
	ctrs      []cctr
	nw        int // windows, the first counters
	// The decision, read from the reply.
	t                int64
	allowed, missing bool

	// undone is, for an undo call, the cost taken back from the counter
	// of each item of the decide call it undoes, or -1.
	undone []int64

	res string // the script's reply, packed
	err error

	state atomic.Int32 // pending, delivered or abandoned
	done  chan struct{}

	// Room for a typical decide call, so that it takes one allocation.
	itemBuf [4]citem
	ctrBuf  [4]cctr
	keyBuf  [4]string
	planBuf [320]byte
	fmtBuf  [64]byte
}

const (
	pending int32 = iota
	delivered
	abandoned
)

// work sends the calls of the queue, a batch at a time, until Close.
func (s *Store) work() {
	defer s.workers.Done()
	batch := make([]*call, 0, s.maxBatch)
	cmds := make([]*redis.Cmd, s.maxBatch)
	for {
		select {
		case c := <-s.queue:
			batch = append(batch[:0], c)
		case <-s.quit:
			return
		}
		s.gather()
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

// gather yields to the goroutines ready to run, a few times while the
// queue grows, so that the calls they are about to make join the batch.
// The one who woke a worker by queueing a call hands it the CPU, and on
// one CPU (GOMAXPROCS=1, or a busy machine) the others run only when the
// worker yields: without this every round trip carried one call, and
// Redis and the proxy paid per call what a batch shares. When nobody
// else is ready a yield costs well under a microsecond.
func (s *Store) gather() {
	for range maxYields {
		n := len(s.queue)
		if n >= s.maxBatch {
			return
		}
		runtime.Gosched()
		if len(s.queue) == n {
			return
		}
	}
}

// maxYields bounds the wait of gather, so that a steady stream of calls
// still leaves in batches.
const maxYields = 4

// Bounds of one script call. The script reads its keys with one MGET and
// its arguments with one struct.unpack, and packs its reply with one
// struct.pack: Lua passes at most 8000 values to a C function.
const (
	maxEvalKeys   = 4000
	maxEvalValues = 4000
	maxEvalPlans  = 255
)

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
		case c.state.Load() == abandoned && c.op != 'U':
			// An undo goes out even when its caller stopped waiting:
			// dropping it would leave a refused request charged.
			c.deliver(s, "", context.Canceled)
		case c.op != 'D':
			evals = append(evals, eval{calls: []*call{c}})
		default:
			g, ok := groups[c.slot]
			nv := c.values()
			if !ok || evals[g].nkeys+len(c.keys) > maxEvalKeys || evals[g].nvalues+nv > maxEvalValues || len(evals[g].calls) >= maxEvalPlans {
				g = len(evals)
				groups[c.slot] = g
				evals = append(evals, eval{})
			}
			evals[g].calls = append(evals[g].calls, c)
			evals[g].nkeys += len(c.keys)
			evals[g].nvalues += nv
		}
	}
	if len(evals) == 0 {
		return
	}
	rs, qs := rateSlack, quotaSlack
	if s.now != nil {
		rs, qs = rateSlackFake, quotaSlackFake
	}
	for i := range evals {
		evals[i].build(rs, qs)
	}
	s.stats.roundTrips.Add(1)
	s.stats.calls.Add(int64(len(evals)))
	cmds = cmds[:len(evals)]
	// run sends the calls of evals (those whose command only picks, if
	// not nil): by the script's SHA, or in full.
	run := func(only func(cmd *redis.Cmd) bool, full bool) {
		var (
			pipe redis.Pipeliner
			sc   evaler = s.rdb
		)
		if len(evals) > 1 {
			pipe = s.rdb.Pipeline()
			sc = pipe
		}
		for i, e := range evals {
			if only != nil && !only(cmds[i]) {
				continue
			}
			if full {
				cmds[i] = sc.Eval(ctx, s.script.src, e.keys, e.args()...)
			} else {
				cmds[i] = sc.EvalSha(ctx, s.script.sha, e.keys, e.args()...)
			}
		}
		if pipe != nil {
			_, _ = pipe.Exec(ctx) // each command carries its own error
		}
	}
	run(nil, false)
	if slices.ContainsFunc(cmds, noScript) {
		// This node has not seen the script (a restart, a new node, a
		// slot on its way to a node that got no SCRIPT LOAD): send it in
		// full, which also leaves it in that node's cache.
		s.stats.loads.Add(1)
		run(noScript, true)
	}
	if s.reload != nil && slices.ContainsFunc(cmds, func(cmd *redis.Cmd) bool { return lostNode(cmd.Err()) }) {
		s.reload(ctx)
	}
	for i := range evals {
		res, err := cmds[i].Text()
		evals[i].deliver(s, res, err)
		cmds[i] = nil
	}
}

// eval is one script call: one call other than Decide, or the decide
// calls of one slot.
type eval struct {
	calls   []*call
	nkeys   int // keys of calls, an upper bound of len(keys)
	nvalues int // values the script unpacks, an upper bound
	op      string
	keys    []string
	blob    []byte
	format  []byte // decide: the format of blob
}

func (e *eval) args() []any {
	if e.format != nil {
		return []any{e.op, e.blob, e.format}
	}
	return []any{e.op, e.blob}
}

// build packs the calls of e into one script call; decide calls get the
// TTL slacks rs and qs.
func (e *eval) build(rs, qs time.Duration) {
	c := e.calls[0]
	e.op = string(c.op)
	if c.op != 'D' {
		e.keys, e.blob = c.keys, c.blob
		return
	}
	// The plans, once each, then the requests.
	size, fsize := 24, 8
	for _, c := range e.calls {
		size += len(c.plan.b) + 17 + 2*len(c.keys)
		fsize += len(c.plan.f) + 3 + len(c.keys)
	}
	w := wire{b: make(packer, 0, size), f: make([]byte, 0, fsize)}
	w.f = append(w.f, '<')
	w.u16(len(e.calls))
	at := len(w.b)
	w.u8(0) // plans, below
	w.num(rs.Milliseconds())
	w.num(qs.Milliseconds())
	plans := make([]int, len(e.calls)) // plan of each call, from 1
	var uniq []*call
	for i, c := range e.calls {
		for j, u := range uniq {
			if string(u.plan.b) == string(c.plan.b) {
				plans[i] = j + 1
				break
			}
		}
		if plans[i] == 0 {
			uniq = append(uniq, c)
			plans[i] = len(uniq)
			w.b = append(w.b, c.plan.b...)
			w.f = append(w.f, c.plan.f...)
		}
	}
	w.b[at] = byte(len(uniq))
	e.keys = make([]string, 0, e.nkeys)
	var index map[string]int
	if len(e.calls) > 1 {
		index = make(map[string]int, e.nkeys)
	}
	for i, c := range e.calls {
		w.u8(plans[i])
		w.num(c.now)
		w.num(c.cost)
		for _, k := range c.keys {
			x, ok := index[k]
			if !ok {
				e.keys = append(e.keys, k)
				x = len(e.keys) // KEYS is 1-based
				if index != nil {
					index[k] = x
				}
			}
			w.u16(x)
		}
	}
	e.blob, e.format = w.b, w.f
}

// deliver splits res, the reply of e, among its calls.
func (e *eval) deliver(s *Store, res string, err error) {
	if err != nil || e.op != "D" {
		for _, c := range e.calls {
			c.deliver(s, res, err)
		}
		return
	}
	for i, c := range e.calls {
		n, err := c.decode(res)
		if err == nil && i == len(e.calls)-1 && n != len(res) {
			err = fmt.Errorf("redisstore: script replied %d bytes more than %d decisions take", len(res)-n, len(e.calls))
		}
		if err != nil {
			for _, c := range e.calls[i:] {
				c.deliver(s, "", err)
			}
			return
		}
		if i == 0 && s.now == nil {
			s.learnSkew(c.t) // once a script call, for redisNow
		}
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
	switch {
	case err == nil && c.items != nil:
		s.undoLater(c)
	case err != nil && c.op == 'U':
		s.logf("redisstore: undo %q: %v", c.keys[0], err)
	}
}

// abandon tells the worker that the caller left. It reports false when
// the result was already delivered.
func (c *call) abandon() bool {
	return c.state.CompareAndSwap(pending, abandoned)
}

// lostNode reports that err is not Redis's answer but the lack of one: a
// connection refused, reset or timed out. In a cluster the node may have
// died and its replica taken its slots; go-redis goes on sending them to
// the dead node until it learns the slots anew (by default a minute
// later, or on a MOVED that a dead node cannot send), so the store asks
// it to (at most every 200 ms, in the background).
func lostNode(err error) bool {
	var reply redis.Error
	return err != nil && !errors.As(err, &reply)
}

func isNoScript(err error) bool {
	return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT")
}

func noScript(cmd *redis.Cmd) bool { return isNoScript(cmd.Err()) }

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
		<-c.done // delivered meanwhile: done closes right after
		return nil
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

// undoWait sends undo calls and waits for them as long as ctx allows;
// they go on without it: one the queue has no room for goes in the
// background, one whose wait ends stays queued and is sent all the same.
// Failures are logged: a charge that stays only makes the limits
// stricter.
func (s *Store) undoWait(ctx context.Context, undos []*call) {
	if len(undos) == 0 {
		return
	}
	s.stats.undone.Add(int64(len(undos)))
	queued := undos[:0:0]
	for _, u := range undos {
		if s.send(ctx, u) != nil {
			s.undoAlone(u)
			continue
		}
		queued = append(queued, u)
	}
	for _, u := range queued {
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
	s.undoAlone(u)
}

// undoAlone sends undo call u in a round trip of its own, in the
// background (at once when the store is closed).
func (s *Store) undoAlone(u *call) {
	run := func() {
		ctx, cancel := context.WithTimeout(context.Background(), undoTimeout)
		defer cancel()
		err := s.rdb.EvalSha(ctx, s.script.sha, u.keys, "U", []byte(u.blob)).Err()
		if isNoScript(err) {
			s.stats.loads.Add(1)
			err = s.rdb.Eval(ctx, s.script.src, u.keys, "U", []byte(u.blob)).Err()
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
