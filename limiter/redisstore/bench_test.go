package redisstore_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/redisstore"
)

// benchCallers are the concurrencies both benchmarks run at.
var benchCallers = []int{1, 16, 64}

// benchSubjects is how many subjects the benchmarks spread requests over.
const benchSubjects = 1000

// realistic returns the limits of a typical request of subject i: three
// rate windows and a daily quota, all high enough to admit everything,
// so that every decision writes.
func realistic(i int) []limiter.Limit {
	id := strconv.Itoa(i)
	tag := "{user:u" + id + "}"
	return []limiter.Limit{
		{Name: "pro-1s", Key: tag + "key:k" + id + "/r1s", Limit: 1e9, Window: time.Second},
		{Name: "pro-1m", Key: tag + "key:k" + id + "/r1m", Limit: 1e9, Window: time.Minute},
		{Name: "pro-1h", Key: tag + "key:k" + id + "/r1h", Limit: 1e9, Window: time.Hour},
		{Name: "pro-daily", Key: tag + "user:u" + id + "/qdaily", Limit: 1e12, Period: utcDay{}},
	}
}

// redisCPU returns the CPU time the Redis server has used.
func redisCPU(b *testing.B, rdb *redis.Client) time.Duration {
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

// runCallers runs f b.N times from callers goroutines and reports
// decisions per second, and the Redis server's CPU time per decision.
func runCallers(b *testing.B, rdb *redis.Client, callers int, f func(i int) error) {
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errs     atomic.Int64
		firstErr atomic.Value
	)
	cpu := redisCPU(b, rdb)
	b.ResetTimer()
	start := time.Now()
	for range callers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if err := f(int(i)); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := errs.Load(); n > 0 {
		b.Fatalf("%d errors, first: %v", n, firstErr.Load())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
	b.ReportMetric(float64((redisCPU(b, rdb)-cpu).Microseconds())/float64(b.N), "redis-µs/decision")
}

// BenchmarkDecide decides realistic requests (3 rate windows and a
// quota) of 1000 subjects through a Limiter.
func BenchmarkDecide(b *testing.B) {
	rdb := testenv.Redis(b)
	for _, callers := range benchCallers {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			s := redisstore.New(rdb, &redisstore.Options{Prefix: testenv.Prefix(b)})
			defer s.Close()
			lim := limiter.New(s, &limiter.Options{Timeout: time.Second})
			ctx := context.Background()
			subjects := make([][]limiter.Limit, benchSubjects)
			for i := range subjects {
				subjects[i] = realistic(i)
				if _, err := lim.Decide(ctx, subjects[i], 1); err != nil { // seeds the quota
					b.Fatal(err)
				}
			}
			before := s.Stats()
			runCallers(b, rdb, callers, func(i int) error {
				d, err := lim.Decide(ctx, subjects[i%benchSubjects], 1)
				if err == nil && !d.Allowed {
					err = fmt.Errorf("refused: %v", d.Refused())
				}
				return err
			})
			after := s.Stats()
			b.ReportMetric(float64(after.Decisions-before.Decisions)/float64(after.RoundTrips-before.RoundTrips), "decisions/roundtrip")
		})
	}
}

// BenchmarkRedisRate is go-redis/redis_rate's Allow, one EVALSHA per
// decision on one limit, at the same concurrencies as BenchmarkDecide.
func BenchmarkRedisRate(b *testing.B) {
	rdb := testenv.Redis(b)
	for _, callers := range benchCallers {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			rl := redis_rate.NewLimiter(rdb)
			prefix := testenv.Prefix(b)
			ctx := context.Background()
			limit := redis_rate.Limit{Rate: 1e9, Burst: 1e9, Period: time.Second}
			keys := make([]string, benchSubjects)
			for i := range keys {
				keys[i] = prefix + "{user:u" + strconv.Itoa(i) + "}"
			}
			runCallers(b, rdb, callers, func(i int) error {
				res, err := rl.Allow(ctx, keys[i%benchSubjects], limit)
				if err == nil && res.Allowed == 0 {
					err = fmt.Errorf("refused")
				}
				return err
			})
		})
	}
}
