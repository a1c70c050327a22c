// Package testenv connects tests to the real Redis and PostgreSQL named
// by GAIA_TEST_REDIS_URL, GAIA_TEST_REDIS_CLUSTER_ADDRS,
// GAIA_TEST_REDIS_SENTINEL (master@host:port,...) and
// GAIA_TEST_DATABASE_URL. Without them a test skips and says why; with
// GAIA_TEST_REQUIRE_SERVICES=1 (as in CI) a missing service fails it.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// need returns the variable's value, or skips (fails when services are
// required) when it is not set.
func need(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v != "" {
		return v
	}
	if os.Getenv("GAIA_TEST_REQUIRE_SERVICES") == "1" {
		t.Fatalf("%s is not set, and GAIA_TEST_REQUIRE_SERVICES=1 requires it", name)
	}
	t.Skipf("%s not set: skipping a test that needs the real service", name)
	return ""
}

// RedisURL returns GAIA_TEST_REDIS_URL.
func RedisURL(t testing.TB) string { return need(t, "GAIA_TEST_REDIS_URL") }

// Redis returns a client of the test Redis, closed when the test ends.
// Tests must keep to their own keys (see Prefix); never FLUSHDB.
func Redis(t testing.TB) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(RedisURL(t))
	if err != nil {
		t.Fatalf("GAIA_TEST_REDIS_URL: %v", err)
	}
	rdb := redis.NewClient(opt)
	connected(t, rdb, "redis at GAIA_TEST_REDIS_URL", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
	return rdb
}

// connected closes rdb when the test ends, and fails the test unless
// ping succeeds within 5 s; where names the service in the message.
func connected(t testing.TB, rdb io.Closer, where string, ping func(context.Context) error) {
	t.Helper()
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ping(ctx); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
}

// RedisClusterAddrs returns GAIA_TEST_REDIS_CLUSTER_ADDRS, split on commas.
func RedisClusterAddrs(t testing.TB) []string {
	return strings.Split(need(t, "GAIA_TEST_REDIS_CLUSTER_ADDRS"), ",")
}

// RedisCluster returns a cluster client of the test cluster.
func RedisCluster(t testing.TB) *redis.ClusterClient {
	t.Helper()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: RedisClusterAddrs(t)})
	connected(t, rdb, "redis cluster at GAIA_TEST_REDIS_CLUSTER_ADDRS", func(ctx context.Context) error {
		return rdb.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error { return c.Ping(ctx).Err() })
	})
	return rdb
}

// RedisSentinel returns the master name and the Sentinel addresses of
// GAIA_TEST_REDIS_SENTINEL, "master@host:port,host:port".
func RedisSentinel(t testing.TB) (master string, addrs []string) {
	t.Helper()
	v := need(t, "GAIA_TEST_REDIS_SENTINEL")
	master, list, ok := strings.Cut(v, "@")
	if !ok || master == "" || list == "" {
		t.Fatalf("GAIA_TEST_REDIS_SENTINEL %q: want master@host:port[,host:port...]", v)
	}
	return master, strings.Split(list, ",")
}

// RedisFailover returns a client of the master that the test Sentinel
// watches, found through the Sentinel, closed when the test ends.
func RedisFailover(t testing.TB) *redis.Client {
	t.Helper()
	master, addrs := RedisSentinel(t)
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: master, SentinelAddrs: addrs})
	connected(t, rdb, "redis through the Sentinel at GAIA_TEST_REDIS_SENTINEL", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
	return rdb
}

// Prefix returns a key prefix no other test run uses: the test's name and
// a random suffix.
func Prefix(t testing.TB) string {
	b := make([]byte, 4)
	rand.Read(b)
	name := strings.NewReplacer("/", ".", " ", "_", "{", "(", "}", ")").Replace(t.Name())
	return "test:" + name + ":" + hex.EncodeToString(b) + ":"
}

// DatabaseURL returns GAIA_TEST_DATABASE_URL.
func DatabaseURL(t testing.TB) string { return need(t, "GAIA_TEST_DATABASE_URL") }

// Schema creates an empty schema for the test, dropped when it ends, and
// returns a database URL whose connections use it as their search_path.
// Apply migrations to it as a fresh database.
func Schema(t testing.TB) string {
	t.Helper()
	base := DatabaseURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("postgres at GAIA_TEST_DATABASE_URL: %v", err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	rand.Read(b)
	schema := "test_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + schema
}

// Pool returns a pool on a fresh schema (see Schema), closed when the
// test ends.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), Schema(t))
	if err != nil {
		t.Fatalf("pgxpool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}
