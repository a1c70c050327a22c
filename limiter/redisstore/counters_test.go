package redisstore

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// TestCounters: Counters returns every quota counter the store holds,
// with the usage and seq its decisions reported, on one Redis, on a
// cluster (whose subjects spread over its masters) and behind a Sentinel; rate windows, the
// markers of refunds and other keys are not counters.
func TestCounters(t *testing.T) {
	sentinel := backend{name: "sentinel", rdb: func(t *testing.T) rediser { return testenv.RedisFailover(t) }}
	for _, b := range []backend{{name: "redis", rdb: backends[0].rdb}, backends[1], sentinel} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.newStore(t, nil, nil)
			lim := newLimiter(s)
			ctx := t.Context()
			hourly := quota.Calendar{Unit: quota.Hourly, Loc: time.UTC}
			want := map[string]limiter.CounterValue{}
			for i := range 60 {
				tag := fmt.Sprintf("{user:u%d}", i)
				limits := []limiter.Limit{
					{Name: "r", Key: tag + "key:k/r1s", Limit: 1000, Window: time.Second},
					{Name: "q", Key: tag + "user:u/qdaily", Limit: 1000, Period: daily, Refundable: true},
					{Name: "h", Key: tag + "user:u/qhourly", Limit: 1000, Period: hourly},
				}
				var d limiter.Decision
				for range 1 + i%3 {
					var err error
					if d, err = lim.Decide(ctx, limits, 2); err != nil || !d.Allowed {
						t.Fatalf("Decide = %v, %v", d, err)
					}
				}
				for _, st := range d.Statuses[1:] {
					want[st.Counter.Key] = limiter.CounterValue{Counter: st.Counter, Used: st.Used, Seq: st.Seq}
				}
				if i%4 == 0 { // a refund leaves a marker key, and a newer seq
					vs, err := s.Refund(ctx, []limiter.Counter{d.Statuses[1].Counter}, 1)
					if err != nil || len(vs) != 1 {
						t.Fatalf("Refund = %v, %v", vs, err)
					}
					want[vs[0].Key] = vs[0]
				}
			}
			// Not counters: a key of another prefix, and keys of this one
			// that only look like counters.
			rdb := s.rdb.(redis.Cmdable)
			for _, k := range []string{"other:{user:u1}user:u/qdaily:p1", s.prefix + "{x}y:pp1", s.prefix + "{x}y:p01", s.prefix + "x:p1"} {
				if err := rdb.Set(ctx, k, "012345678901234567890123", time.Minute).Err(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { rdb.Del(ctx, k) })
			}

			got := map[string]limiter.CounterValue{}
			batches := 0
			err := s.Counters(ctx, func(vs []limiter.CounterValue) error {
				batches++
				for _, v := range vs {
					got[v.Key] = v
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Errorf("Counters returned %d counters, want %d", len(got), len(want))
			}
			for k, w := range want {
				g, ok := got[k]
				if !ok || !g.Start.Equal(w.Start) || g.Used != w.Used || g.Seq != w.Seq {
					t.Errorf("counter %s: got %+v (found %v), want %+v", k, g, ok, w)
				}
			}
			t.Logf("%d counters in %d batches", len(got), batches)
		})
	}
}

// TestCounterOf: counterOf reads back every key quotaKey makes of a Key
// with a hash tag, with a period start in whole seconds or not, and
// nothing else.
func TestCounterOf(t *testing.T) {
	s := &Store{prefix: "gaia:"}
	starts := []time.Time{time.Unix(0, 0), time.Unix(1772409600, 0), time.UnixMicro(1772409600123456)}
	keys := []string{"{user:alice}user:alice/qdaily", "{u}x:p5/q", "a{b}c:p", "{global}global/route:r/qx"}
	for _, k := range keys {
		for _, st := range starts {
			c, ok := s.counterOf(s.quotaKey(k, st))
			if !ok || c.Key != k || !c.Start.Equal(st) {
				t.Errorf("counterOf(quotaKey(%q, %v)) = %+v, %v", k, st, c, ok)
			}
		}
	}
	for _, k := range []string{
		"gaia:{u}k/", "gaia:{u}k:r", "gaia:{u}:once:abc", "gaia:{u}k:p", "gaia:{u}k:p-1", "gaia:{u}k:p+1",
		"gaia:{u}k:p1x", "gaia:{u}k:p1uss", "gaia:{u}k:p01", "gaia:u:p1", "other:{u}k:p1", "gaia:{}k:p1",
	} {
		if c, ok := s.counterOf(k); ok {
			t.Errorf("counterOf(%q) = %+v, want no counter", k, c)
		}
	}
}

// TestHeartbeat: a process silent for longer than stale is claimed by
// exactly one of the callers that find it; one that left is claimed by
// none, nor is one that beat since. (The heartbeats are written by hand,
// at 1970 and at a year from now, so that no timing matters.)
func TestHeartbeat(t *testing.T) {
	s := backends[0].newStore(t, nil, nil)
	ctx := t.Context()
	rdb := s.rdb.(redis.Cmdable)
	now := time.Now().UnixMilli()
	err := rdb.HSet(ctx, s.replicasKey(), "dies", 0, "leaves", 0, "lives", now+365*24*3600*1000).Err()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Leave(ctx, "leaves"); err != nil {
		t.Fatal(err)
	}
	var claimed atomic.Int64
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			n, err := s.Heartbeat(ctx, fmt.Sprint("claimer", i), time.Minute)
			if err != nil {
				t.Error(err)
			}
			claimed.Add(int64(n))
		})
	}
	wg.Wait()
	if n := claimed.Load(); n != 1 {
		t.Errorf("8 callers claimed %d processes in all, want 1: the one that died", n)
	}
	left, err := rdb.HKeys(ctx, s.replicasKey()).Result()
	slices.Sort(left)
	if want := []string{"claimer0", "claimer1", "claimer2", "claimer3", "claimer4", "claimer5", "claimer6", "claimer7", "lives"}; err != nil || !slices.Equal(left, want) {
		t.Errorf("heartbeats left: %q, %v; want %q", left, err, want)
	}
	if ttl := rdb.PTTL(ctx, s.replicasKey()).Val(); ttl <= 0 || ttl > replicasTTL {
		t.Errorf("the heartbeats' TTL is %v, want at most %v", ttl, replicasTTL)
	}
}
