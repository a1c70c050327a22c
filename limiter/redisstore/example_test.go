package redisstore_test

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/redisstore"
)

// Replicas that share a Redis share their limits. This example needs a
// Redis at 127.0.0.1:6379, so it is compiled but not run.
func Example() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	store := redisstore.New(rdb, nil) // or a *redis.ClusterClient
	defer store.Close()

	lim := limiter.New(store, nil) // seeds quota counters, records usage
	limits := []limiter.Limit{
		{Name: "free-1s", Key: "{user:alice}key:k1/r1s", Limit: 10, Window: time.Second},
		{Name: "free-daily", Key: "{user:alice}user:alice/qdaily", Limit: 10000, Period: utcDay},
	}
	d, err := lim.Decide(context.Background(), limits, 1)
	if err != nil {
		fmt.Println("limiter unavailable:", err)
		return
	}
	fmt.Println("allowed:", d.Allowed, "remaining this second:", d.Statuses[0].Remaining)
}
