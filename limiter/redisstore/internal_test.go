package redisstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/memstore"
	"github.com/gaia-proxy/gaia-proxy/limiter/storetest"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// newLimiter returns a Limiter on s whose round trips have no time
// bound: these tests check the store, not the failure modes.
func newLimiter(s *Store) *limiter.Limiter {
	return limiter.New(s, &limiter.Options{Timeout: -1})
}

// backend is a Redis the multi-slot tests run on: the single Redis with
// every hash slot decided apart as in a cluster, or the real cluster.
type backend struct {
	name  string
	rdb   func(t *testing.T) rediser
	split bool
}

var backends = []backend{
	{"redis-by-slot", func(t *testing.T) rediser { return testenv.Redis(t) }, true},
	{"cluster", func(t *testing.T) rediser { return testenv.RedisCluster(t) }, false},
}

// newStore returns a store on b for t, reading time from now (nil: Redis).
func (b backend) newStore(t *testing.T, now func() time.Time, o *Options) *Store {
	t.Helper()
	if o == nil {
		o = &Options{}
	}
	o.Prefix, o.Now = testenv.Prefix(t), now
	s := New(b.rdb(t), o)
	if b.split {
		s.bySlot = true
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestSlotsMatchMemstore drives a store whose limits live in three slots
// (two users and a global limit) with random sequential requests, and
// checks every decision against memstore's: reserving in each slot and
// undoing on refusal must give exactly the single-store semantics.
func TestSlotsMatchMemstore(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			clock := storetest.NewClock(storetest.Start)
			s := b.newStore(t, clock.Now, nil)
			ref := memstore.New(clock.Now)
			tag := strconv.FormatInt(time.Now().UnixNano(), 36)
			rate := func(k, name string, limit int64, w time.Duration) limiter.Limit {
				return limiter.Limit{Name: name, Key: "{" + k + tag + "}" + name, Limit: limit, Window: w}
			}
			quota := func(k, name string, limit int64) limiter.Limit {
				return limiter.Limit{Name: name, Key: "{" + k + tag + "}" + name, Limit: limit, Period: hourly}
			}
			pool := []limiter.Limit{
				rate("a", "a/r1s", 5, time.Second),
				rate("a", "a/r10s", 20, 10*time.Second),
				quota("a", "a/q", 60),
				rate("b", "b/r1s", 4, time.Second),
				quota("b", "b/q", 40),
				rate("g", "g/r1s", 8, time.Second),
				quota("g", "g/q", 200),
			}
			shadowA := rate("a", "a/shadow", 3, time.Second)
			shadowA.Shadow = true
			shadowG := rate("g", "g/shadow", 6, time.Second)
			shadowG.Shadow = true
			strictA := pool[0] // the same counter as a/r1s, stricter
			strictA.Name, strictA.Limit = "a/r1s-strict", 4
			pool = append(pool, shadowA, shadowG, strictA)
			for i := range pool {
				if pool[i].Key[1] == 'g' {
					pool[i].PerRequest = true // a route's global limits count requests
				}
			}

			rng := rand.New(rand.NewPCG(7, 11))
			ctx := t.Context()
			var allowed, refused, missing int
			for n := range 2500 {
				clock.Advance(time.Duration(rng.IntN(60_000)) * time.Microsecond)
				var lim []limiter.Limit
				for _, i := range rng.Perm(len(pool))[:1+rng.IntN(len(pool))] {
					lim = append(lim, pool[i])
				}
				cost := int64(rng.IntN(4))
				got, err := s.Decide(ctx, lim, cost)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := ref.Decide(ctx, lim, cost)
				if err := sameDecision(got, want); err != nil {
					t.Fatalf("request %d (cost %d at +%v): %v", n, cost, clock.Now().Sub(storetest.Start), err)
				}
				switch {
				case len(want.Missing) > 0:
					missing++
					var values []limiter.CounterValue
					for _, i := range want.Missing {
						values = append(values, limiter.CounterValue{Counter: want.Statuses[i].Counter, Used: int64(rng.IntN(5)), Seq: 3})
					}
					if err := s.Seed(ctx, values); err != nil {
						t.Fatal(err)
					}
					ref.Seed(ctx, values)
				case want.Allowed:
					allowed++
				default:
					refused++
				}
			}
			t.Logf("%d allowed, %d refused, %d missing; %+v", allowed, refused, missing, s.Stats())
			if allowed == 0 || refused == 0 || s.Stats().Undone == 0 {
				t.Errorf("the requests did not exercise reservations and undos: %d allowed, %d refused, %+v", allowed, refused, s.Stats())
			}
		})
	}
}

// sameDecision reports how got differs from want.
func sameDecision(got, want limiter.Decision) error {
	if got.Allowed != want.Allowed || fmt.Sprint(got.Missing) != fmt.Sprint(want.Missing) {
		return fmt.Errorf("allowed=%v missing=%v, want %v %v", got.Allowed, got.Missing, want.Allowed, want.Missing)
	}
	for i := range want.Statuses {
		g, w := got.Statuses[i], want.Statuses[i]
		if g.Used != w.Used || g.Remaining != w.Remaining || g.Reset != w.Reset || g.Exceeded != w.Exceeded ||
			g.Charged != w.Charged || g.RetryAfter != w.RetryAfter || g.Seq != w.Seq ||
			g.Counter.Key != w.Counter.Key || !g.Counter.Start.Equal(w.Counter.Start) {
			return fmt.Errorf("%s: got %+v\n\twant %+v", w.Limit.Name, g, w)
		}
	}
	return nil
}

// TestSlotsConcurrent hammers requests whose limits live in three slots
// (the key's own limit, its user's quota, a global limit) from many
// goroutines, and checks that no limit ever admits more than it allows,
// that the counters hold exactly what was admitted (every reservation
// undone), and that the transient under-admission is small.
func TestSlotsConcurrent(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			clock := storetest.NewClock(storetest.Start) // frozen: nothing leaves a window
			s := b.newStore(t, clock.Now, nil)
			lim := newLimiter(s)
			const (
				users, perUserRate, perUserQuota, global = 8, 30, 20, 100
				goroutines, each                         = 32, 60
			)
			tag := strconv.FormatInt(time.Now().UnixNano(), 36)
			limits := func(u int) []limiter.Limit {
				id := "u" + strconv.Itoa(u) + tag
				return []limiter.Limit{
					{Name: "key-1h", Key: "{user:" + id + "}key:" + id + "/r1h", Limit: perUserRate, Window: time.Hour},
					{Name: "user-hourly", Key: "{user:" + id + "}user:" + id + "/qhourly", Limit: perUserQuota, Period: hourly},
					{Name: "global-1h", Key: "{global" + tag + "}global/route:search/r1h", Limit: global, Window: time.Hour, PerRequest: true},
				}
			}
			if b.rdb != nil && !b.split {
				if slot(s.prefix+limits(0)[0].Key) == slot(s.prefix+limits(0)[2].Key) {
					t.Fatal("the user's and the global limits share a slot; pick other names")
				}
			}
			var (
				mu       sync.Mutex
				admitted [users]int
				total    int
				wg       sync.WaitGroup
			)
			ctx := t.Context()
			for g := range goroutines {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(g), 3))
					for range each {
						u := rng.IntN(users)
						d, err := lim.Decide(ctx, limits(u), 1)
						if err != nil {
							t.Error(err)
							return
						}
						if d.Allowed {
							mu.Lock()
							admitted[u]++
							total++
							mu.Unlock()
						}
					}
				})
			}
			wg.Wait()
			if total > global {
				t.Errorf("%d admitted, the global limit is %d", total, global)
			}
			for u, n := range admitted {
				if n > perUserQuota {
					t.Errorf("user %d: %d admitted, its quota is %d", u, n, perUserQuota)
				}
				// The counters hold exactly what was admitted: every
				// reservation of a refused request was undone.
				d, err := lim.Decide(ctx, limits(u), 0)
				if err != nil {
					t.Fatal(err)
				}
				for _, st := range d.Statuses {
					want := int64(n)
					if st.Limit.Name == "global-1h" {
						want = int64(total)
					}
					if st.Used != want {
						t.Errorf("user %d, %s: used = %d after the hammer, want %d (admitted)", u, st.Limit.Name, st.Used, want)
					}
				}
			}
			// Whatever the hammer left unused, sequential requests take.
			concurrent := total
			for progress := true; progress; {
				progress = false
				for u := range users {
					if d, err := lim.Decide(ctx, limits(u), 1); err != nil {
						t.Fatal(err)
					} else if d.Allowed {
						admitted[u]++
						total++
						progress = true
					}
				}
			}
			if total != global {
				t.Errorf("%d admitted in the end, want the global limit %d", total, global)
			}
			under := total - concurrent
			t.Logf("%d goroutines × %d requests: %d admitted concurrently, %d more afterwards (transient under-admission); %+v",
				goroutines, each, concurrent, under, s.Stats())
			if under > global/10 {
				t.Errorf("under-admission %d of %d, want at most 10%%", under, global)
			}
		})
	}
}

// TestNoScript checks that a Redis that does not know the script (a new
// server, SCRIPT FLUSH, a failover) gets it loaded again, alone or in a
// pipeline. The store uses a script of its own, unknown to the server,
// so the shared server's script cache is left alone.
func TestNoScript(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			for _, callers := range []int{1, 32} {
				s := b.newStore(t, nil, &Options{Workers: 1})
				s.script = newScript(storeScript.src + "\n-- " + testenv.Prefix(t) + strconv.Itoa(callers) + "\n")
				var wg sync.WaitGroup
				for i := range callers {
					wg.Go(func() {
						l := []limiter.Limit{{Name: "r", Key: "{noscript" + strconv.Itoa(i) + "}r", Limit: 5, Window: time.Second}}
						d, err := s.Decide(t.Context(), l, 1)
						if err != nil || !d.Allowed || d.Statuses[0].Used != 1 {
							t.Errorf("Decide = %v, %v, want allowed, used 1", d, err)
						}
					})
				}
				wg.Wait()
				if st := s.Stats(); st.ScriptLoads < 1 {
					t.Errorf("%d callers: %d script loads, want at least 1", callers, st.ScriptLoads)
				}
			}
		})
	}
}

// TestLostNode: a reply of Redis (an error it answered) is not a lost
// node; a connection that failed is.
func TestLostNode(t *testing.T) {
	rdb := testenv.Redis(t)
	reply := rdb.Do(t.Context(), "NO-SUCH-COMMAND").Err()
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer dead.Close()
	refused := dead.Ping(t.Context()).Err()
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"none", nil, false},
		{"Redis's error reply", reply, false},
		{"NOSCRIPT", rdb.EvalSha(t.Context(), strings.Repeat("0", 40), nil).Err(), false},
		{"nil reply", redis.Nil, false},
		{"connection refused", refused, true},
		{"wrapped", fmt.Errorf("decide: %w", refused), true},
	} {
		if tc.err == nil && tc.name != "none" {
			t.Fatalf("%s: no error to test", tc.name)
		}
		if got := lostNode(tc.err); got != tc.want {
			t.Errorf("%s (%v): lostNode = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestTTL checks that counters expire by themselves: a window string
// soon after its window, a quota counter just after its period.
func TestTTL(t *testing.T) {
	rdb := testenv.Redis(t)
	s := New(rdb, &Options{Prefix: testenv.Prefix(t)})
	t.Cleanup(func() { s.Close() })
	lim := []limiter.Limit{
		{Name: "r", Key: "{ttl}key:k/r1s", Limit: 10, Window: time.Second},
		{Name: "q", Key: "{ttl}user:u/qdaily", Limit: 10, Period: daily},
	}
	d, err := newLimiter(s).Decide(t.Context(), lim, 1)
	if err != nil || !d.Allowed {
		t.Fatalf("Decide = %v, %v", d, err)
	}
	ctx := t.Context()
	g := limiter.BucketWidth(time.Second)
	wkey, _ := s.windowKey(lim[0].Key)
	rttl := rdb.PTTL(ctx, wkey).Val()
	// Units leave the window (Buckets, Buckets+1] bucket widths after now,
	// and the string lives a second more, and a quarter window more.
	if hi := time.Duration(limiter.Buckets+1)*g*5/4 + rateSlack + time.Millisecond; rttl <= rateSlack || rttl > hi {
		t.Errorf("window string TTL = %v, want in (%v, %v]", rttl, rateSlack, hi)
	}
	c := d.Statuses[1].Counter
	_, end := daily.Bounds(c.Start)
	qttl := rdb.PTTL(ctx, s.quotaKey(c.Key, c.Start)).Val()
	if hi := time.Until(end) + quotaSlack + time.Second; qttl <= quotaSlack || qttl > hi {
		t.Errorf("quota counter TTL = %v, want in (%v, %v]", qttl, quotaSlack, hi)
	}
	t.Logf("window string TTL %v, quota counter TTL %v", rttl, qttl)

	// The next decisions keep both TTLs (SET KEEPTTL): the window string's
	// still covers its window, the quota's its period.
	for range 3 {
		if d, err := s.Decide(ctx, lim, 1); err != nil || !d.Allowed {
			t.Fatalf("Decide = %v, %v", d, err)
		}
	}
	if r := rdb.PTTL(ctx, wkey).Val(); r > rttl || r <= rateSlack {
		t.Errorf("window string TTL after more decisions = %v, want in (%v, %v]", r, rateSlack, rttl)
	}
	if q := rdb.PTTL(ctx, s.quotaKey(c.Key, c.Start)).Val(); q > qttl || q <= quotaSlack {
		t.Errorf("quota counter TTL after more decisions = %v, want in (%v, %v]", q, quotaSlack, qttl)
	}
}

// TestMemoryPerSubject measures, with MEMORY USAGE, what a subject with
// three rate windows (one window string) and a daily quota costs Redis:
// after one request, and with every window full (a request in each of
// its 51 buckets).
func TestMemoryPerSubject(t *testing.T) {
	rdb := testenv.Redis(t)
	clock := storetest.NewClock(storetest.Start.Add(time.Hour))
	s := New(rdb, &Options{Prefix: testenv.Prefix(t), Now: clock.Now})
	t.Cleanup(func() { s.Close() })
	lim := newLimiter(s)
	ctx := t.Context()
	subject := func(id string) []limiter.Limit {
		tag := "{user:" + id + "}"
		return []limiter.Limit{
			{Name: "pro-1s", Key: tag + "key:" + id + "/r1s", Limit: 100, Window: time.Second},
			{Name: "pro-1m", Key: tag + "key:" + id + "/r1m", Limit: 5000, Window: time.Minute},
			{Name: "pro-1h", Key: tag + "key:" + id + "/r1h", Limit: 100000, Window: time.Hour},
			{Name: "pro-daily", Key: tag + "user:" + id + "/qdaily", Limit: 1000000, Period: daily},
		}
	}
	usage := func(l []limiter.Limit, d limiter.Decision) (total int64) {
		var keys []string
		for i, x := range l {
			key := s.quotaKey(x.Key, d.Statuses[i].Counter.Start)
			if x.Period == nil {
				key, _ = s.windowKey(x.Key)
			}
			if !slices.Contains(keys, key) {
				keys = append(keys, key)
			}
		}
		for _, key := range keys {
			n, err := rdb.MemoryUsage(ctx, key).Result()
			if err != nil {
				t.Fatalf("MEMORY USAGE %s: %v", key, err)
			}
			total += n
		}
		return total
	}
	decide := func(l []limiter.Limit) limiter.Decision {
		d, err := lim.Decide(ctx, l, 1)
		if err != nil || !d.Allowed {
			t.Fatalf("Decide = %v, %v", d, err)
		}
		return d
	}

	one := subject("one")
	light := usage(one, decide(one))

	// One request per bucket of the hour window, then of the minute
	// window, then of the second window: every window is full.
	busy := subject("busy")
	end := clock.Now()
	var d limiter.Decision
	for _, w := range []time.Duration{time.Hour, time.Minute, time.Second} {
		g := limiter.BucketWidth(w)
		for k := limiter.Buckets; k >= 1; k-- {
			clock.Set(end.Add(-time.Duration(k) * g))
			d = decide(busy)
		}
	}
	clock.Set(end)
	d = decide(busy)
	full := usage(busy, d)
	t.Logf("Redis memory per subject (3 rate windows in one string + 1 quota): %d bytes after one request, %d bytes with every window full", light, full)
	if light > 600 || full > 900 {
		t.Errorf("memory per subject = %d, %d bytes, want at most 600, 900", light, full)
	}
}

// TestBatching checks that concurrent decisions share round trips.
func TestBatching(t *testing.T) {
	rdb := testenv.Redis(t)
	s := New(rdb, &Options{Prefix: testenv.Prefix(t), Workers: 1})
	t.Cleanup(func() { s.Close() })
	const callers, each = 64, 10
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for i := range each {
				l := []limiter.Limit{
					{Name: "r", Key: "{batch" + strconv.Itoa(c) + "}r", Limit: 1000, Window: time.Minute},
					{Name: "r2", Key: "{batch" + strconv.Itoa(c) + "}r2", Limit: 1000, Window: time.Second},
				}
				d, err := s.Decide(t.Context(), l, 1)
				if err != nil || !d.Allowed || d.Statuses[0].Used != int64(i+1) {
					t.Errorf("Decide = %v, %v, want allowed, used %d", d, err, i+1)
				}
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	t.Logf("%d decisions in %d round trips (%.1f per round trip)", st.Decisions, st.RoundTrips, float64(st.Decisions)/float64(st.RoundTrips))
	if st.Decisions != callers*each || st.RoundTrips >= st.Decisions {
		t.Errorf("%d decisions in %d round trips, want %d in fewer", st.Decisions, st.RoundTrips, callers*each)
	}
}

// TestCallerLeaves checks that a caller whose ctx ends gets
// ErrUnavailable with ctx's error, and that a charge already sent is
// taken back.
func TestCallerLeaves(t *testing.T) {
	rdb := testenv.Redis(t)
	s := New(rdb, &Options{Prefix: testenv.Prefix(t)})
	l := []limiter.Limit{{Name: "r", Key: "{leave}r", Limit: 50, Window: time.Hour}}
	counted := int64(0)
	for range 20 {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		d, err := s.Decide(ctx, l, 1)
		if err == nil {
			if d.Allowed {
				counted++ // delivered before the caller noticed: it counts, rightly
			}
			continue
		}
		if !errors.Is(err, limiter.ErrUnavailable) || !errors.Is(err, context.Canceled) {
			t.Errorf("Decide with a cancelled ctx = %v, want ErrUnavailable and context.Canceled", err)
		}
	}
	s.Close() // waits for the undos
	if _, err := s.Decide(t.Context(), l, 1); !errors.Is(err, limiter.ErrUnavailable) {
		t.Errorf("Decide after Close = %v, want ErrUnavailable", err)
	}
	s = New(rdb, &Options{Prefix: s.prefix})
	d, err := s.Decide(t.Context(), l, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Statuses[0].Used; got != counted {
		t.Errorf("used = %d after 20 decisions whose callers left, want %d (those that returned a decision)", got, counted)
	}
	t.Logf("%d of 20 decisions returned before their caller left; %+v", counted, s.Stats())

	// A result that arrives after its caller left is undone.
	lim := append(l, limiter.Limit{Name: "q", Key: "{leave}q", Limit: 50, Period: hourly})
	if _, err := newLimiter(s).Decide(t.Context(), lim, 0); err != nil { // seeds the quota
		t.Fatal(err)
	}
	before, err := s.Decide(t.Context(), lim, 0)
	if err != nil {
		t.Fatal(err)
	}
	items := []item{s.newItem(&lim[0], 3, time.Now(), nil)}
	items = append(items, s.newItem(&lim[1], 3, time.Now(), items))
	sent := s.decideCall(lim, items, []int{0, 1}, 3)
	s.exec([]*call{sent}, make([]*redis.Cmd, 1))
	if sent.err != nil || !sent.allowed {
		t.Fatalf("decide: %v, allowed %v", sent.err, sent.allowed)
	}
	late := s.decideCall(lim, items, []int{0, 1}, 3)
	if _, err := late.decode(sent.res); err != nil {
		t.Fatal(err)
	}
	late.abandon()
	late.deliver(s, sent.res, nil)
	s.Close() // waits for the undo
	s = New(rdb, &Options{Prefix: s.prefix})
	defer s.Close()
	after, err := s.Decide(t.Context(), lim, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range lim {
		b, a := before.Statuses[i], after.Statuses[i]
		if a.Used != b.Used || a.Seq != b.Seq {
			t.Errorf("%s after an undone charge: used=%d seq=%d, want %d %d as before", lim[i].Name, a.Used, a.Seq, b.Used, b.Seq)
		}
	}
	if st := s.Stats(); st.Decisions == 0 {
		t.Errorf("stats = %+v", st)
	}
}

// TestCallsReusedWhileCallersLeave runs decisions whose callers give up
// at random moments, some before their result, some as it arrives, so
// that calls go back to the pool while workers deliver others; run it
// with -race. Caller c charges its own key cost c+1 each time, so a
// result that belonged to another call shows as a use that is not a
// multiple of c+1, or below what c's own decisions charged.
func TestCallsReusedWhileCallersLeave(t *testing.T) {
	rdb := testenv.Redis(t)
	s := New(rdb, &Options{Prefix: testenv.Prefix(t)})
	defer s.Close()
	const callers, each = 32, 40
	var wg sync.WaitGroup
	var decided, left atomic.Int64
	for c := range callers {
		wg.Go(func() {
			cost := int64(c + 1)
			l := []limiter.Limit{{Name: "r", Key: "{reuse" + strconv.Itoa(c) + "}r", Limit: 1 << 40, Window: time.Hour}}
			own := int64(0)
			for i := range each {
				wait := time.Duration((c*each+i)%400) * 10 * time.Microsecond // 0 (gone at once) to 4 ms
				if i%8 == 7 {
					wait = time.Second // and some that surely decide
				}
				ctx, cancel := context.WithTimeout(t.Context(), wait)
				d, err := s.Decide(ctx, l, cost)
				cancel()
				if err != nil {
					left.Add(1)
					continue
				}
				decided.Add(1)
				own += cost
				if u := d.Statuses[0].Used; u%cost != 0 || u < own {
					t.Errorf("caller %d: used %d after charging %d in steps of %d", c, u, own, cost)
				}
			}
		})
	}
	wg.Wait()
	if decided.Load() == 0 || left.Load() == 0 {
		t.Fatalf("%d decided, %d callers left first: the test needs both", decided.Load(), left.Load())
	}
}

var _ rediser = (*redis.Client)(nil)
var _ rediser = (*redis.ClusterClient)(nil)

// TestWindowStrings drives one store with requests that name random
// subsets of windows sharing window strings (so that layouts change and
// windows of other requests ride along), ids shared by windows of two
// widths, Keys with a string of their own, costs that outgrow 1, 2 and 4
// byte counts, and resets, and checks every decision and every reset
// against memstore's.
func TestWindowStrings(t *testing.T) {
	rdb := testenv.Redis(t)
	clock := storetest.NewClock(storetest.Start)
	s := New(rdb, &Options{Prefix: testenv.Prefix(t), Now: clock.Now})
	t.Cleanup(func() { s.Close() })
	ref := memstore.New(clock.Now)
	tag := "{w" + strconv.FormatInt(time.Now().UnixNano(), 36) + "}"
	rate := func(key string, limit int64, w time.Duration) limiter.Limit {
		return limiter.Limit{Name: key + "/" + w.String(), Key: key, Limit: limit, Window: w}
	}
	pool := []limiter.Limit{
		rate(tag+"key:k/r1s", 40, time.Second),
		rate(tag+"key:k/r1m", 600, time.Minute),
		rate(tag+"key:k/r5s", 100, 5*time.Second),
		rate(tag+"key:k/r", 30, time.Second),   // id "r" at two widths:
		rate(tag+"key:k/r", 50, 2*time.Second), // two windows
		rate(tag+"key:k/big", 20_000_000_000, 10*time.Second),
		rate(tag+"key:k/route:x/r1s", 5, time.Second),
		rate(tag+"solo", 25, time.Second),    // no "/" after the tag
		rate("plain/r1s", 25, 3*time.Second), // no hash tag
		{Name: "q", Key: tag + "user:u/qhourly", Limit: 1e12, Period: hourly},
	}
	pool[1].Shadow = true
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(3, 5))
	var allowed, refused, wide, wider int
	for n := range 3000 {
		clock.Advance(time.Duration(rng.IntN(400_000)) * time.Microsecond)
		var lim []limiter.Limit
		for _, i := range rng.Perm(len(pool))[:1+rng.IntN(len(pool))] {
			lim = append(lim, pool[i])
		}
		big := rng.IntN(6) == 0
		if big {
			lim = []limiter.Limit{pool[5], pool[9], pool[1]} // big costs fit these
		}
		if rng.IntN(40) == 0 {
			got, err := s.Reset(ctx, lim)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := ref.Reset(ctx, lim)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("request %d: Reset = %v, want %v", n, got, want)
			}
			continue
		}
		cost := int64(rng.IntN(4))
		switch {
		case big && rng.IntN(2) == 0:
			cost = int64(rng.IntN(5_000_000_000))
		case big || rng.IntN(10) == 0:
			cost = int64(rng.IntN(70_000))
		}
		got, err := newLimiter(s).Decide(ctx, lim, cost)
		if err != nil {
			t.Fatal(err)
		}
		want, err := limiter.New(ref, nil).Decide(ctx, lim, cost)
		if err != nil {
			t.Fatal(err)
		}
		if err := sameDecision(got, want); err != nil {
			t.Fatalf("request %d (cost %d at +%v): %v", n, cost, clock.Now().Sub(storetest.Start), err)
		}
		if want.Allowed {
			allowed++
			if cost >= 1<<16 {
				wide++
			}
			if cost >= 1<<32 {
				wider++
			}
		} else {
			refused++
		}
	}
	t.Logf("%d allowed (%d of cost >= 2^16, %d >= 2^32), %d refused", allowed, wide, wider, refused)
	if allowed < 100 || refused < 100 || wide < 50 || wider < 20 {
		t.Errorf("%d allowed (%d, %d wide), %d refused: the requests do not exercise all cases", allowed, wide, wider, refused)
	}
}

// TestManyWindows decides requests of 100 windows in one window string
// and 20 quotas, whose formats and counts outgrow a byte, against
// memstore's.
func TestManyWindows(t *testing.T) {
	rdb := testenv.Redis(t)
	clock := storetest.NewClock(storetest.Start)
	s := New(rdb, &Options{Prefix: testenv.Prefix(t), Now: clock.Now})
	t.Cleanup(func() { s.Close() })
	ref := memstore.New(clock.Now)
	tag := "{many" + strconv.FormatInt(time.Now().UnixNano(), 36) + "}"
	var lim []limiter.Limit
	for i := range 100 {
		w := time.Duration(i+1) * 100 * time.Millisecond
		lim = append(lim, limiter.Limit{Name: "r" + strconv.Itoa(i), Key: tag + "key:k/r" + strconv.Itoa(i), Limit: int64(20 + i), Window: w})
	}
	for i := range 20 {
		lim = append(lim, limiter.Limit{Name: "q" + strconv.Itoa(i), Key: tag + "user:u/q" + strconv.Itoa(i), Limit: int64(1000 + i), Period: hourly})
	}
	ctx := t.Context()
	for n := range 200 {
		clock.Advance(time.Duration(n%7) * 13 * time.Millisecond)
		got, err := newLimiter(s).Decide(ctx, lim, 1)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := limiter.New(ref, nil).Decide(ctx, lim, 1)
		if err := sameDecision(got, want); err != nil {
			t.Fatalf("request %d: %v", n, err)
		}
	}
}

// UTC hours and days.
var (
	hourly = quota.Calendar{Unit: quota.Hourly, Loc: time.UTC}
	daily  = quota.Calendar{Unit: quota.Daily, Loc: time.UTC}
)

// stalling holds the first script call of one operation, once armed,
// until release closes, and says when it began.
type stalling struct {
	*redis.Client
	op               string
	armed            atomic.Bool
	entered, release chan struct{}
}

func (b *stalling) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	if len(args) > 0 && args[0] == b.op && b.armed.CompareAndSwap(true, false) {
		close(b.entered)
		<-b.release
	}
	return b.Client.EvalSha(ctx, sha, keys, args...)
}

// TestUndoOutlivesItsWait checks that an undo whose caller stopped
// waiting (the decision's bound ended while the only worker was busy)
// is still sent: a refused request must not stay charged.
func TestUndoOutlivesItsWait(t *testing.T) {
	b := &stalling{Client: testenv.Redis(t), op: "R", entered: make(chan struct{}), release: make(chan struct{})}
	s := New(b, &Options{Prefix: testenv.Prefix(t), Workers: 1, Logf: t.Logf})
	defer s.Close()
	ctx := t.Context()
	if err := s.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	l := []limiter.Limit{{Name: "r", Key: "{a}a/r10m", Limit: 10, Window: 10 * time.Minute}}
	c := s.decideCall(l, []item{s.newItem(&l[0], 1, time.Now(), nil)}, []int{0}, 1)
	if err := s.send(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.wait(ctx, c); err != nil || c.err != nil || !c.allowed {
		t.Fatalf("charge: %v, %v, allowed %v", err, c.err, c.allowed)
	}
	// Hold the only worker with a refund, and give the undo 10 ms: its
	// bound ends while it is still queued.
	b.armed.Store(true)
	refunded := make(chan struct{})
	go func() {
		defer close(refunded)
		s.Refund(ctx, []limiter.Counter{{Key: "{z}z/q", Start: time.Unix(0, 0)}}, 1)
	}()
	<-b.entered
	bound, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	s.undoWait(bound, []*call{s.undoCall(c, false)})
	close(b.release)
	<-refunded
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		d, err := s.Decide(ctx, l, 0)
		if err != nil {
			t.Fatal(err)
		}
		if d.Statuses[0].Used == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the undo, the window still holds %d units, want 0", d.Statuses[0].Used)
		}
	}
}

// replyEater relays connections to Redis; armed, it swallows the reply to
// the next command that contains pat and cuts that connection: the
// command ran, its caller saw a broken connection, and go-redis sends it
// again on a new one.
type replyEater struct {
	ln    net.Listener
	to    string
	pat   []byte
	armed atomic.Bool
}

func (p *replyEater) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.relay(c)
	}
}

func (p *replyEater) relay(c net.Conn) {
	u, err := net.Dial("tcp", p.to)
	if err != nil {
		c.Close()
		return
	}
	var eat atomic.Bool
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if bytes.Contains(buf[:n], p.pat) && p.armed.CompareAndSwap(true, false) {
					eat.Store(true)
				}
				u.Write(buf[:n])
			}
			if err != nil {
				u.Close()
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := u.Read(buf)
		if n > 0 && eat.Load() {
			break
		}
		if n > 0 {
			c.Write(buf[:n])
		}
		if err != nil {
			break
		}
	}
	c.Close()
	u.Close()
}

// TestRefundRunsOnce checks that a refund whose reply was lost, which
// go-redis then sends again, gives the units back once.
func TestRefundRunsOnce(t *testing.T) {
	direct := testenv.Redis(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := &replyEater{ln: ln, to: direct.Options().Addr, pat: []byte("$1\r\nR\r\n")}
	go p.serve()
	rdb := redis.NewClient(&redis.Options{Addr: ln.Addr().String()})
	defer rdb.Close()
	s := New(rdb, &Options{Prefix: testenv.Prefix(t), Logf: t.Logf})
	defer s.Close()
	ctx := t.Context()
	q := []limiter.Limit{{Name: "q", Key: "{u}u/qhourly", Limit: 100, Period: hourly, Refundable: true}}
	d, err := s.Decide(ctx, q, 0)
	if err != nil || len(d.Missing) != 1 {
		t.Fatalf("Decide = %+v, %v; want the counter missing", d, err)
	}
	if err := s.Seed(ctx, []limiter.CounterValue{{Counter: d.Statuses[0].Counter, Used: 5, Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	p.armed.Store(true)
	v, err := s.Refund(ctx, []limiter.Counter{d.Statuses[0].Counter}, 1)
	if err != nil || len(v) != 1 || v[0].Used != 4 || v[0].Seq != 2 {
		t.Errorf("Refund = %+v, %v; want used 4, seq 2", v, err)
	}
	if p.armed.Load() {
		t.Fatal("the refund's reply was not lost: the test tested nothing")
	}
	if d, err := s.Decide(ctx, q, 0); err != nil || d.Statuses[0].Used != 4 {
		t.Errorf("after refunding 1 of 5: %+v, %v; want used 4", d.Statuses, err)
	}
}

// TestUndoRunsOnce checks that an undo sent twice takes its charge back
// once: the second run leaves another request's unit in place.
func TestUndoRunsOnce(t *testing.T) {
	rdb := testenv.Redis(t)
	s := New(rdb, &Options{Prefix: testenv.Prefix(t), Logf: t.Logf})
	defer s.Close()
	ctx := t.Context()
	if err := s.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	l := []limiter.Limit{{Name: "r", Key: "{a}a/r10m", Limit: 10, Window: 10 * time.Minute}}
	charge := func() *call {
		c := s.decideCall(l, []item{s.newItem(&l[0], 1, time.Now(), nil)}, []int{0}, 1)
		if err := s.send(ctx, c); err != nil {
			t.Fatal(err)
		}
		if err := s.wait(ctx, c); err != nil || c.err != nil || !c.allowed {
			t.Fatalf("charge: %v, %v, allowed %v", err, c.err, c.allowed)
		}
		return c
	}
	u := s.undoCall(charge(), false)
	charge()
	for range 2 {
		if err := rdb.EvalSha(ctx, s.script.sha, u.keys, "U", []byte(u.blob)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := s.Decide(ctx, l, 0); err != nil || d.Statuses[0].Used != 1 {
		t.Errorf("two charges, one undo sent twice: %+v, %v; want used 1", d.Statuses, err)
	}
}
