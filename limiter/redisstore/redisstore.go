// Package redisstore is the Redis backend of limiter.Store: many
// gaia-proxy replicas share one Redis (or Redis Cluster), so every limit
// is global across them, and exact.
//
// # Decisions
//
// A decision is made inside one Lua script (store.lua, called by EVALSHA,
// sent in full by EVAL to a node that answers NOSCRIPT) that reads every
// counter of the request, checks every limit, and charges them all only
// when every enforced limit passes: the algorithm, the semantics and the
// Status numbers of limiter/memstore, to the microsecond
// (limiter/storetest checks both against one reference model). Numbers
// are integer microseconds, exact in Lua's doubles. Time is the Redis
// server's TIME, the one clock all replicas share; Options.Now replaces
// it, for tests only.
//
// # Data layout
//
// Keys are Options.Prefix, then the limit's Key (which starts with its
// hash tag, "{user:alice}", so that Redis Cluster keeps a subject's
// counters in one slot; a Key without a tag is wrapped in braces), then
// the counter:
//
//	gaia:{user:alice}key:k1/                         window string of owner key:k1
//	gaia:{user:alice}user:alice/qdaily:p1772409600   quota counter, period start (Unix s)
//
// The rate windows of one owner, the Key up to its last "/" (the
// subject, or the subject and a route), share one window string: the
// three windows of a plan are one key, read and written at once. A
// window is named in it by the rest of its Key ("r1s") and its bucket
// width. A Key without a "/" after its tag has a string of its own
// ("...:r"). The string holds, per window, a header (newest bucket, the
// units of older buckets and of the newest one, the count width) and a
// history: a (bucket mod 256, count) pair per older bucket that holds
// units, counts of 1, 2, 4 or 8 bytes, the smallest that holds the
// total; store.lua documents the bytes. A window holding nothing costs
// its header, so memory follows the buckets in use: at most
// limiter.Buckets pairs per window. A quota counter is a string of 24
// bytes: used, seq and the period end.
//
// A window string's TTL ends a second after the newest bucket of its
// longest window leaves that window, plus a quarter of the window when
// it is set, so a busy owner sets its TTL four times per window (SET
// PX) and otherwise writes with SET KEEPTTL; the string records when its
// TTL ends. A quota counter's TTL ends a minute after its period; it is
// set once, when a decision first sees the counter (an hour past a
// seeded counter until then). Idle subjects vanish by themselves.
// Measured with MEMORY USAGE on Redis 7.0 (TestMemoryPerSubject), a
// subject with three rate windows and a daily quota takes 416 bytes
// after one request, 768 bytes with every window full.
//
// Quota periods come from Limit.Period in local time; within a minute of
// a boundary the neighbouring period is sent too, and the script picks
// the one holding the Redis clock's now, so replicas whose clocks
// disagree still agree on the period; Status.Counter names the period
// chosen. A quota counter the store does not hold is reported in
// Decision.Missing and nothing is charged: the Limiter seeds it from the
// ledger and asks again. Seed sets counters only if absent, Refund
// decrements counters still in their period and bumps their seq, Reset
// drops rate windows and zeroes quota counters.
//
// # Cost
//
// A decision on three rate windows and a daily quota reads two keys and,
// when it charges, writes two (SET KEEPTTL, the cheapest write from
// Lua). The script reads a batch's arguments with one struct.unpack, and
// the part of a request that its keys and time leave out (its plan: the
// windows, quotas and limits of a policy) comes once per script call
// however many requests share it. A window is moved to now in amortised
// O(1): history pairs are read only as they leave. The reply gives the
// counters' state before the request (and, for a refusal, when the cost
// fits); Decide derives the statuses in Go, as the script decided.
// Measured with callgrind on Redis 7.0.15 (machine instructions inside
// EVALSHA, steady state, 16 decisions per script call): about 100,000
// per decision, against 204,000 for the previous layout of one key per
// counter, and 40,000 for one go-redis/redis_rate Allow of one limit.
// In Redis's Lua a VM instruction costs about 50 machine instructions
// (the script-timeout count hook), moving a number through struct about
// 250 and a redis.call about 6,500; the two SETs and the MGET are a
// quarter of the total. See bench_test.go for throughput.
//
// # Batching
//
// Calls go to Redis through a few worker goroutines (Options.Workers).
// Each takes one pending call, waiting for it, then every other pending
// call up to Options.MaxBatch without waiting, and sends them in one
// round trip: the decisions of one slot (all of them, on a single Redis)
// in one script call that decides them one after the other, each
// atomically, reading every key of the batch with one MGET and writing
// each changed key once. At low load a decision goes out at once, alone;
// under load many share a round trip and a script call, and the script
// call's own cost (about as much as a decision's) is shared.
//
// A caller waits for its result with its ctx. When ctx ends first, it
// gets ctx's error wrapped with limiter.ErrUnavailable at once; its call
// is dropped if not sent yet, and if sent, its charges are taken back
// when the result arrives. Should that undo fail, or should go-redis
// retry a call whose reply was lost, a charge counts for a request that
// was not admitted: limits then under-admit, never over-admit. A decide
// call whose result its caller has read goes back to a pool for the next
// decision; one whose caller left belongs to the worker from then on.
//
// # Redis Cluster
//
// With a *redis.ClusterClient, the limits of a request are grouped by
// hash slot, and each group is decided by a script call on its slot, all
// in one round trip. Usually a request has one group: its limits share
// the subject's hash tag. A request that also names a limit in another
// slot (a global route limit, "{global}...") reserves in every group:
// each group checks and charges its own limits as if they were the whole
// request. When every group passes, the request is admitted. When one
// refuses (or misses a quota counter), the groups that charged are
// undone: the units leave the bucket they were added to, and a quota's
// usage and seq go back. A reservation holds from the moment it was
// checked until it is undone, so two requests never both pass when only
// one fits; the price is a transient under-admission: a concurrent
// request that saw a reservation later undone may have been refused
// although it would have fitted (TestSlotsConcurrent measures it).
// Sequential decisions are exactly memstore's (TestSlotsMatchMemstore).
// Shadow limits are approximate across slots under concurrency: each
// group charges its shadow limits when its own shadow limits pass, and
// those charges are undone when a shadow limit of another group would
// have refused. An undone quota charge that another request's charge
// followed bumps the seq instead of restoring it (a seq names one value),
// and the ledger, which saw the later value, over-counts by it until the
// counter's next charge.
//
// On a single Redis (*redis.Client), every limit of a request goes in one
// script call, whatever its hash tags.
package redisstore

import (
	"context"
	"crypto/sha1"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

const (
	// DefaultPrefix is the key prefix of a zero Options.Prefix.
	DefaultPrefix = "gaia:"

	defaultWorkers  = 2
	defaultMaxBatch = 64

	// maxSkew is how close to a period boundary the local clock must be
	// for the neighbouring period to be sent too.
	maxSkew = time.Minute
	// rateSlack and quotaSlack keep counters this long after they stop
	// mattering. With Options.Now the fake clock is not the one Redis
	// expires keys by, so the margins are wider.
	rateSlack, rateSlackFake   = time.Second, 10 * time.Minute
	quotaSlack, quotaSlackFake = time.Minute, time.Hour
	// seedTTL is the TTL of a seeded quota counter until a decision sets
	// its period end.
	seedTTL = time.Hour
	// undoTimeout bounds undoing charges in the background.
	undoTimeout = 5 * time.Second
)

//go:embed store.lua
var source string

// storeScript is store.lua with SPAN set from limiter.Buckets and
// MARKER_TTL from markerTTL.
var storeScript = func() *script {
	src := source
	for line, v := range map[string]int{"local SPAN = 51": limiter.Buckets + 1, "local MARKER_TTL = 30": markerTTL} {
		if !strings.Contains(src, line) {
			panic("redisstore: store.lua lost its line " + line)
		}
		src = strings.Replace(src, line, line[:strings.LastIndexByte(line, ' ')+1]+strconv.Itoa(v), 1)
	}
	return newScript(src)
}()

// script is a Lua script and its SHA-1, the name EVALSHA calls it by.
type script struct {
	src, sha string
}

func newScript(src string) *script {
	h := sha1.Sum([]byte(src))
	return &script{src: src, sha: hex.EncodeToString(h[:])}
}

// rediser lists the go-redis methods the store calls; *redis.Client and
// *redis.ClusterClient have them.
type rediser interface {
	evaler
	Pipeline() redis.Pipeliner
	ScriptLoad(ctx context.Context, script string) *redis.StringCmd
	Ping(ctx context.Context) *redis.StatusCmd
	Time(ctx context.Context) *redis.TimeCmd
}

// evaler runs scripts: a client, or a pipeline.
type evaler interface {
	Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd
	EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd
}

// Options configure a Store. Nil or zero values mean the defaults.
type Options struct {
	// Prefix starts every key, before the limit Key's hash tag so that
	// the tag still chooses the slot. Empty means DefaultPrefix. It must
	// not contain "{" or "}".
	Prefix string
	// Clock is this process's own clock, used only to list the quota
	// periods around now, among which the script picks by the Redis
	// clock. It is corrected by how far it was from the Redis clock at
	// Warm and at the last decision, so a clock hours off still lists the
	// right periods. Nil means time.Now. Tests skew it to show that
	// replicas with clocks apart still agree.
	Clock func() time.Time
	// Now is for tests: it replaces the Redis clock with a fake one,
	// passed to every script call. Nil means the script reads Redis TIME,
	// the one clock all replicas share.
	Now func() time.Time
	// Logf receives operational logs. Nil means log.Printf.
	Logf func(format string, args ...any)
	// Workers is how many goroutines send calls to Redis, each one
	// pipeline at a time. Zero means 2: one call runs in Redis while the
	// next batch forms, and batches stay large (on 2 cores, 4 workers
	// halved the batch and cost Redis 10% more CPU per decision).
	Workers int
	// MaxBatch is the most calls (decisions, seeds, refunds) one round
	// trip carries. Zero means 64.
	MaxBatch int
}

// Store is a limiter.Store on Redis. Safe for concurrent use. Call Close
// when done with it.
type Store struct {
	rdb    rediser
	script *script
	prefix string
	now    func() time.Time // fake Redis clock (tests); nil: Redis TIME
	clock  func() time.Time // this process's clock
	skew   atomic.Int64     // the Redis clock minus clock, µs, as last seen
	logf   func(format string, args ...any)
	bySlot bool // one script call per hash slot: Redis Cluster
	// reload asks a cluster client to learn the slots anew (nil for one
	// Redis); see lostNode.
	reload   func(context.Context)
	maxBatch int

	queue   chan *call
	quit    chan struct{}
	workers sync.WaitGroup

	mu     sync.Mutex // guards closed, and bg.Add against bg.Wait
	closed bool
	bg     sync.WaitGroup // background undos

	stats struct {
		decisions, calls, roundTrips, undone, loads atomic.Int64
	}
	ops opIDs // names undo, refund and reset calls for their markers
}

var _ limiter.Store = (*Store)(nil)

// New returns a Store keeping its counters in rdb, a *redis.Client or a
// *redis.ClusterClient, and starts its workers. A nil o means defaults.
// New panics if o.Prefix contains a brace, which would change the slots
// of keys.
func New(rdb rediser, o *Options) *Store {
	if o == nil {
		o = &Options{}
	}
	s := &Store{
		rdb:      rdb,
		script:   storeScript,
		prefix:   o.Prefix,
		now:      o.Now,
		clock:    o.Clock,
		logf:     o.Logf,
		maxBatch: o.MaxBatch,
		quit:     make(chan struct{}),
	}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if strings.ContainsAny(s.prefix, "{}") {
		panic(fmt.Sprintf("redisstore: prefix %q contains a brace", s.prefix))
	}
	if s.logf == nil {
		s.logf = log.Printf
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.maxBatch <= 0 {
		s.maxBatch = defaultMaxBatch
	}
	s.ops.start()
	workers := o.Workers
	if workers <= 0 {
		workers = defaultWorkers
	}
	if c, ok := rdb.(*redis.ClusterClient); ok {
		s.bySlot, s.reload = true, c.ReloadState
	}
	s.queue = make(chan *call, workers*s.maxBatch)
	for range workers {
		s.workers.Add(1)
		go s.work()
	}
	return s
}

// Warm readies the store for traffic: it connects to Redis (every master
// of a cluster) and loads the script there, so that the first decisions
// pay neither for setting up a connection (TLS, AUTH) nor for a NOSCRIPT
// round trip. An error means Redis cannot be reached now; the store
// works once it can.
func (s *Store) Warm(ctx context.Context) error {
	if t, err := s.rdb.Time(ctx).Result(); err == nil {
		s.learnSkew(t.UnixMicro())
	}
	return s.rdb.ScriptLoad(ctx, s.script.src).Err()
}

// redisNow is the Redis clock as this process can tell without asking:
// its own clock, corrected by the skew last seen. Quota periods are
// listed around it (newItem), so that a replica whose clock is off by
// more than maxSkew still sends the period Redis is in.
func (s *Store) redisNow() time.Time {
	return s.clock().Add(time.Duration(s.skew.Load()) * time.Microsecond)
}

// learnSkew notes that the Redis clock read t (µs) a moment ago: at
// Warm, and once per decide script call (the worker, not each caller).
// It writes only a change of over a millisecond, so the shared word is
// seldom written; the reply's own delay, well under maxSkew, is not
// corrected for.
func (s *Store) learnSkew(t int64) {
	d := t - s.clock().UnixMicro()
	if old := s.skew.Load(); d-old > 1000 || old-d > 1000 {
		s.skew.Store(d)
	}
}

// Ping reports whether Redis answers (limiter.Pinger): a health check's
// look at a store that has no decisions to make.
func (s *Store) Ping(ctx context.Context) error {
	return s.rdb.Ping(ctx).Err()
}

// Close stops the workers, once the calls they are sending are done, and
// waits for background undos. Decisions after Close fail with
// limiter.ErrUnavailable. It does not close the Redis client.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.quit)
	s.workers.Wait()
	s.bg.Wait()
	return nil
}

// Stats counts what a Store did since New.
type Stats struct {
	// Decisions is the number of Decide calls sent to Redis.
	Decisions int64
	// Calls is the number of script calls sent. The decisions of one
	// slot sent in one round trip share one; seeds, refunds, resets and
	// undos have one each.
	Calls int64
	// RoundTrips is the number of pipelines sent; calls share them under
	// load.
	RoundTrips int64
	// Undone is the number of script calls that took charges back:
	// multi-slot refusals, shadow limits across slots, abandoned calls.
	Undone int64
	// ScriptLoads is the number of times the script was sent in full
	// (EVAL) after a NOSCRIPT reply.
	ScriptLoads int64
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Decisions:   s.stats.decisions.Load(),
		Calls:       s.stats.calls.Load(),
		RoundTrips:  s.stats.roundTrips.Load(),
		Undone:      s.stats.undone.Load(),
		ScriptLoads: s.stats.loads.Load(),
	}
}

var (
	errNegativeCost = errors.New("redisstore: negative cost")
	errClosed       = errors.New("redisstore: store closed")
)

// period is a candidate quota period.
type period struct {
	start, end time.Time
	key        string
}

// item is one limit of a decision, bound to its counter('s keys).
type item struct {
	rate  bool
	key   string // rate: the owner's window string
	owner string // rate: the owner part of the Key, "" for none
	id    string // rate: the window's name in it
	width int64  // rate: bucket width, µs
	cand  [3]period
	nc    int
	cost  int64 // the request's cost, or 1 for PerRequest limits
	slot  int
}

// base returns the key of l's counters without their suffix: Prefix and
// Key, with braces around Key when it has no hash tag of its own, so
// that all of l's counters share a slot.
func (s *Store) base(key string) string {
	if _, ok := hashTag(key); ok {
		return s.prefix + key
	}
	return s.prefix + "{" + key + "}"
}

// maxID is the longest window id a window string records.
const maxID = 240

// windowKey returns the key of the window string holding the rate
// windows of key, and the window's id in it. A Key with a "/" after its
// hash tag, "{user:alice}key:k1/r1s", shares the string of its owner,
// the Key up to that "/", "gaia:{user:alice}key:k1/", with the owner's
// other windows, under the id "r1s". Another Key has a string of its
// own, "gaia:{tag}name:r", id "". Window strings end in "/" or ":r",
// quota counters in a digit or "us", so they never meet.
func (s *Store) windowKey(key string) (string, string) {
	owner, id := splitOwner(key)
	return s.ownerKey(key, owner), id
}

// splitOwner returns the owner part of key, the Key up to and with the
// last "/" after its hash tag, and the id after it; or "" and "" when
// key has no owner and keeps a string of its own.
func splitOwner(key string) (owner, id string) {
	if e := tagEnd(key); e >= 0 {
		if p := strings.LastIndexByte(key[e+1:], '/'); p >= 0 && len(key)-(e+p+2) <= maxID {
			p += e + 1
			return key[:p+1], key[p+1:]
		}
	}
	return "", ""
}

// ownerKey returns the key of the window string of key, whose owner part
// is owner.
func (s *Store) ownerKey(key, owner string) string {
	switch {
	case owner != "":
		return s.prefix + owner
	case tagEnd(key) >= 0:
		return s.prefix + key + ":r"
	}
	return s.prefix + "{" + key + "}:r"
}

func (s *Store) quotaKey(key string, start time.Time) string {
	var buf [128]byte
	b := append(buf[:0], s.prefix...)
	if tagEnd(key) >= 0 {
		b = append(b, key...)
	} else {
		b = append(append(append(b, '{'), key...), '}')
	}
	b = append(b, ":p"...)
	if start.Nanosecond() == 0 {
		b = strconv.AppendInt(b, start.Unix(), 10)
	} else {
		b = append(strconv.AppendInt(b, start.UnixMicro(), 10), "us"...)
	}
	return string(b)
}

// newItem binds l to its counter at now (local time: the script may pick
// a neighbouring quota period by the Redis clock). prev are the items of
// the limits before l, whose keys it may share.
func (s *Store) newItem(l *limiter.Limit, cost int64, now time.Time, prev []item) item {
	it := item{cost: cost}
	if l.PerRequest {
		it.cost = min(cost, 1)
	}
	it.slot = s.slotOf(l.Key)
	if l.Period == nil {
		it.rate = true
		it.width = limiter.BucketWidth(l.Window).Microseconds()
		var owner string
		owner, it.id = splitOwner(l.Key)
		for i := range prev {
			if p := &prev[i]; p.rate && owner != "" && p.owner == owner {
				it.key = p.key // the string of an earlier limit's window
				break
			}
		}
		if it.key == "" {
			it.key = s.ownerKey(l.Key, owner)
		}
		it.owner = owner
		return it
	}
	add := func(start, end time.Time) {
		it.cand[it.nc] = period{start: start, end: end, key: s.quotaKey(l.Key, start)}
		it.nc++
	}
	start, end := l.Period.Bounds(now)
	if s.now == nil && now.Sub(start) < maxSkew {
		if ps, pe := l.Period.Bounds(start.Add(-time.Nanosecond)); pe.Equal(start) {
			add(ps, pe)
		}
	}
	add(start, end)
	if s.now == nil && end.Sub(now) <= maxSkew {
		if ns, ne := l.Period.Bounds(end); ns.Equal(end) {
			add(ns, ne)
		}
	}
	return it
}

// Decide implements limiter.Store.
func (s *Store) Decide(ctx context.Context, limits []limiter.Limit, cost int64) (limiter.Decision, error) {
	if cost < 0 {
		return limiter.Decision{}, errNegativeCost
	}
	d := limiter.Decision{Statuses: make([]limiter.Status, len(limits))}
	for i := range limits {
		d.Statuses[i].Limit = limits[i]
	}
	if len(limits) == 0 {
		d.Allowed = true
		return d, nil
	}
	now := s.redisNow()
	if s.now != nil {
		now = s.now()
	}
	var buf [8]item
	items := buf[:0]
	if len(limits) > len(buf) {
		items = make([]item, 0, len(limits))
	}
	for i := range limits {
		items = append(items, s.newItem(&limits[i], cost, now, items))
	}
	s.stats.decisions.Add(1)

	groups := s.group(items)
	if len(groups) == 1 {
		c := s.decideCall(limits, items, groups[0], cost)
		if err := s.send(ctx, c); err != nil {
			return d, s.fail(limits, err)
		}
		if err := s.wait(ctx, c); err != nil {
			return d, s.fail(limits, err)
		}
		if c.err != nil {
			return d, s.fail(limits, c.err)
		}
		s.apply(&d, limits, items, groups[0], c, now)
		d.Allowed = c.allowed
		c.release()
		slices.Sort(d.Missing)
		return d, nil
	}
	return s.decideGroups(ctx, d, limits, items, groups, cost, now)
}

// fail wraps err for a decision on limits.
func (s *Store) fail(limits []limiter.Limit, err error) error {
	return fmt.Errorf("redisstore: decide %q: %w: %w", limits[0].Key, limiter.ErrUnavailable, err)
}

// group returns the indexes of items, grouped by slot in a cluster, else
// all together.
func (s *Store) group(items []item) [][]int {
	one := true
	for i := range items {
		one = one && items[i].slot == items[0].slot
	}
	if one && len(items) <= len(identity) {
		return oneGroup[len(items)-1 : len(items)]
	}
	var groups [][]int
	var slots []int
	for i := range items {
		g := slices.Index(slots, items[i].slot)
		if g < 0 {
			g = len(groups)
			slots = append(slots, items[i].slot)
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	return groups
}

// identity holds 0, 1, 2, ...; oneGroup[n-1] is the group of n items
// that share one slot, without allocating it.
var identity, oneGroup = func() (id [64]int, groups [64][]int) {
	for i := range id {
		id[i] = i
	}
	for n := range groups {
		groups[n] = id[: n+1 : n+1]
	}
	return id, groups
}()

// decideGroups decides limits whose counters live in several slots: each
// group reserves, and the reservations are undone unless all pass.
func (s *Store) decideGroups(ctx context.Context, d limiter.Decision, limits []limiter.Limit, items []item, groups [][]int, cost int64, now time.Time) (limiter.Decision, error) {
	calls := make([]*call, len(groups))
	for g, idx := range groups {
		calls[g] = s.decideCall(limits, items, idx, cost)
	}
	if err := s.waitAll(ctx, calls); err != nil {
		return d, s.fail(limits, err)
	}
	var err error
	allowed, missing := true, false
	for g, c := range calls {
		if c.err != nil {
			err = c.err
			continue
		}
		s.apply(&d, limits, items, groups[g], c, now)
		allowed = allowed && c.allowed
		missing = missing || c.missing
	}
	shadowOK := true
	for i := range d.Statuses {
		if st := &d.Statuses[i]; st.Exceeded && st.Limit.Shadow {
			shadowOK = false
		}
	}
	// Take back what must not stay: every charge unless the request is
	// admitted, else the charges of shadow limits when one would refuse.
	if all := err != nil || !allowed || missing; all || !shadowOK {
		var undos []*call
		for g, c := range calls {
			u := s.undoCall(c, !all)
			if u == nil {
				continue
			}
			undos = append(undos, u)
			// The statuses now read as if those counters were not charged.
			for k, i := range groups[g] {
				x := u.undone[k]
				if x < 0 {
					continue
				}
				st := &d.Statuses[i]
				st.Charged = false
				st.Used -= x
				st.Remaining = max(st.Limit.Limit-st.Used, 0)
				if st.Limit.Period != nil {
					st.Seq--
				} else if st.Used == 0 {
					st.Reset = 0
				}
			}
		}
		s.undoWait(ctx, undos)
	}
	switch {
	case err != nil:
		return d, s.fail(limits, err)
	case missing:
		for i := range d.Statuses {
			d.Statuses[i] = limiter.Status{Limit: limits[i], Counter: d.Statuses[i].Counter}
		}
		slices.Sort(d.Missing)
		return d, nil
	}
	d.Allowed = allowed
	return d, nil
}

// slotOf returns the slot of the counters of key in a cluster, else 0.
func (s *Store) slotOf(key string) int {
	if !s.bySlot {
		return 0
	}
	tag, _ := hashTag(key)
	return int(crc16(tag) % numSlots)
}

// counterCalls spreads operations on quota counters over script calls
// of one op: a call per slot (another past maxEvalKeys counters), its
// arguments head followed by each counter's own.
type counterCalls struct {
	s     *Store
	op    byte
	head  packer
	once  bool // each call runs once: its keys end with a marker
	calls []*call
	open  map[int]int // slot: its call taking more counters
	at    []ref       // per counter added, in order: its call and place
}

// ref is a counter's call, and its place among the call's keys.
type ref struct{ g, k int }

func (s *Store) counterCalls(op byte, head packer, once bool) *counterCalls {
	return &counterCalls{s: s, op: op, head: head, once: once, open: map[int]int{}}
}

// add adds counter c, with its arguments args (packed after those of
// the counters before it).
func (cc *counterCalls) add(c limiter.Counter, args ...int64) {
	sl := cc.s.slotOf(c.Key)
	g, ok := cc.open[sl]
	if !ok || len(cc.calls[g].keys) == maxEvalKeys {
		g = len(cc.calls)
		cc.open[sl] = g
		// Clipped: each call's arguments grow in an array of their own.
		cc.calls = append(cc.calls, &call{op: cc.op, blob: slices.Clip(cc.head), slot: sl, done: make(chan struct{})})
	}
	cl := cc.calls[g]
	cc.at = append(cc.at, ref{g, len(cl.keys)})
	cl.keys = append(cl.keys, cc.s.quotaKey(c.Key, c.Start))
	for _, a := range args {
		cl.blob = cl.blob.num(a)
	}
}

// run sends the calls and waits for their replies.
func (cc *counterCalls) run(ctx context.Context) error {
	if cc.once {
		for _, c := range cc.calls {
			cc.s.once(c)
		}
	}
	if err := cc.s.waitAll(ctx, cc.calls); err != nil {
		return err
	}
	for _, c := range cc.calls {
		if c.err != nil {
			return c.err
		}
	}
	return nil
}

// values reads the replies of a run that answers, per counter, its
// usage and seq after the call (-1 and -1: left alone), and returns
// those of the counters it changed, counters[i] being the i-th added.
func (cc *counterCalls) values(counters []limiter.Counter) ([]limiter.CounterValue, error) {
	var values []limiter.CounterValue
	for i, r := range cc.at {
		c := cc.calls[r.g]
		n := len(c.keys)
		if cc.once {
			n-- // the marker
		}
		if len(c.res) != 16*n {
			return nil, fmt.Errorf("script replied %d bytes for %d counters", len(c.res), n)
		}
		if used, seq := num(c.res, 16*r.k), num(c.res, 16*r.k+8); used >= 0 {
			values = append(values, limiter.CounterValue{Counter: counters[i], Used: used, Seq: seq})
		}
	}
	return values, nil
}

// Seed implements limiter.Store.
func (s *Store) Seed(ctx context.Context, values []limiter.CounterValue) error {
	if len(values) == 0 {
		return nil
	}
	cc := s.counterCalls('S', packer{}.num(seedTTL.Milliseconds()), false)
	for _, v := range values {
		cc.add(v.Counter, v.Used, v.Seq)
	}
	if err := cc.run(ctx); err != nil {
		return fmt.Errorf("redisstore: seed %q: %w: %w", values[0].Key, limiter.ErrUnavailable, err)
	}
	return nil
}

// Raise brings quota counters that went back behind the ledger up to
// it, and returns those it changed with their new values: see
// quota.Raiser. Counters it does not hold are left alone; a decision
// seeds them from the ledger.
func (s *Store) Raise(ctx context.Context, ledger []limiter.CounterValue) ([]limiter.CounterValue, error) {
	if len(ledger) == 0 {
		return nil, nil
	}
	cc := s.counterCalls('L', packer{}, false)
	counters := make([]limiter.Counter, len(ledger))
	for i, v := range ledger {
		cc.add(v.Counter, v.Used, v.Seq)
		counters[i] = v.Counter
	}
	err := cc.run(ctx)
	var raised []limiter.CounterValue
	if err == nil {
		raised, err = cc.values(counters)
	}
	if err != nil {
		return nil, fmt.Errorf("redisstore: raise %q: %w: %w", ledger[0].Key, limiter.ErrUnavailable, err)
	}
	return raised, nil
}

// Refund implements limiter.Store. A counter listed twice is refunded
// once, as Decide charged it once.
func (s *Store) Refund(ctx context.Context, counters []limiter.Counter, cost int64) ([]limiter.CounterValue, error) {
	if cost < 0 {
		return nil, errNegativeCost
	}
	if cost == 0 || len(counters) == 0 {
		return nil, nil
	}
	head := packer{}.num(-1).num(cost)
	if s.now != nil {
		head = packer{}.num(s.now().UnixMicro()).num(cost)
	}
	cc := s.counterCalls('R', head, true)
	var unique []limiter.Counter
	for i, c := range counters {
		if slices.ContainsFunc(counters[:i], c.Is) {
			continue
		}
		cc.add(c)
		unique = append(unique, c)
	}
	err := cc.run(ctx)
	var values []limiter.CounterValue
	if err == nil {
		values, err = cc.values(unique)
	}
	if err != nil {
		return nil, fmt.Errorf("redisstore: refund %q: %w: %w", counters[0].Key, limiter.ErrUnavailable, err)
	}
	return values, nil
}

// Reset implements limiter.Store: rate windows are dropped, and held
// quota counters of the period holding now (by the Redis clock) set to
// zero with seq one higher.
func (s *Store) Reset(ctx context.Context, limits []limiter.Limit) ([]limiter.CounterValue, error) {
	if len(limits) == 0 {
		return nil, nil
	}
	now, nowArg := s.redisNow(), int64(-1)
	if s.now != nil {
		now = s.now()
		nowArg = now.UnixMicro()
	}
	items := make([]item, len(limits))
	for i := range limits {
		items[i] = s.newItem(&limits[i], 0, now, items[:i])
	}
	groups := s.group(items)
	calls := make([]*call, len(groups))
	for g, idx := range groups {
		c := &call{op: 'X', slot: items[idx[0]].slot, done: make(chan struct{})}
		p := packer{}.num(nowArg).u16(len(idx))
		for _, i := range idx {
			it := &items[i]
			if it.rate {
				c.keys = append(c.keys, it.key)
				p = p.u8(1).str(idg(it.id, it.width))
				continue
			}
			p = p.u8(2).u8(it.nc)
			for _, q := range it.cand[:it.nc] {
				c.keys = append(c.keys, q.key)
				p = p.num(q.end.UnixMicro())
			}
		}
		c.blob = p
		s.once(c)
		calls[g] = c
	}
	fail := func(err error) error {
		return fmt.Errorf("redisstore: reset %q: %w: %w", limits[0].Key, limiter.ErrUnavailable, err)
	}
	if err := s.waitAll(ctx, calls); err != nil {
		return nil, fail(err)
	}
	seqs := make([]int64, len(limits))
	cands := make([]int64, len(limits))
	for g, c := range calls {
		if c.err != nil {
			return nil, fail(c.err)
		}
		if len(c.res) != 16*len(groups[g]) {
			return nil, fail(fmt.Errorf("script replied %d bytes for %d limits", len(c.res), len(groups[g])))
		}
		for k, i := range groups[g] {
			seqs[i], cands[i] = num(c.res, 16*k), num(c.res, 16*k+8)
		}
	}
	var values []limiter.CounterValue
	for i := range limits {
		if it := &items[i]; !it.rate && seqs[i] >= 0 {
			start := it.cand[min(cands[i], int64(it.nc-1))].start
			values = append(values, limiter.CounterValue{Counter: limiter.Counter{Key: limits[i].Key, Start: start}, Seq: seqs[i]})
		}
	}
	return values, nil
}
