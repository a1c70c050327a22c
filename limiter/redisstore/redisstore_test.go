package redisstore_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/redisstore"
	"github.com/gaia-proxy/gaia-proxy/limiter/storetest"
)

// contract is how far the storetest property tests go: each decision is
// a round trip, so a third of memstore's length (90,000 decisions, 70
// windows for utilisation), every decision still checked against the
// reference model.
var contract = storetest.Options{Scale: 0.3}

func TestStore(t *testing.T) {
	t.Parallel()
	runContract(t, testenv.Redis(t))
}

func TestStoreCluster(t *testing.T) {
	t.Parallel()
	runContract(t, testenv.RedisCluster(t))
}

func TestStoreSentinel(t *testing.T) {
	t.Parallel()
	runContract(t, testenv.RedisFailover(t))
}

// runContract runs the storetest suite against stores on rdb.
func runContract(t *testing.T, rdb redis.UniversalClient) {
	storetest.RunWith(t, contract, func(t *testing.T, clock *storetest.Clock) limiter.Store {
		s := redisstore.New(rdb, &redisstore.Options{Prefix: testenv.Prefix(t), Now: clock.Now})
		t.Cleanup(func() { s.Close() })
		return s
	})
}
