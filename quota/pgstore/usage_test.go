package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/migrations"
	"github.com/gaia-proxy/gaia-proxy/quota"
	"github.com/gaia-proxy/gaia-proxy/quota/pgstore"
	"github.com/gaia-proxy/gaia-proxy/quota/quotatest"
)

// pgPool returns a pool on url, closed when the test ends.
func pgPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// pgStoreOn returns a Store on the schema of url (see testenv.Schema),
// migrated.
func pgStoreOn(t *testing.T, url string) *pgstore.Store {
	t.Helper()
	pool := pgPool(t, url)
	if _, err := migrations.Apply(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	return pgstore.New(pool)
}

// pgStore returns a Store on a fresh, migrated schema.
func pgStore(t *testing.T) *pgstore.Store {
	t.Helper()
	return pgStoreOn(t, testenv.Schema(t))
}

func TestStore(t *testing.T) {
	quotatest.RunStore(t, func(t *testing.T) quota.Store { return pgStore(t) })
}

func TestPeriodUsage(t *testing.T) {
	quotatest.RunPeriodUsage(t, func(t *testing.T) quotatest.PeriodUsage { return pgStore(t) })
}

func TestPrune(t *testing.T) {
	quotatest.RunPrune(t, func(t *testing.T) quotatest.Prune { return pgStore(t) })
}

// TestWriteSubSecond: a Start with a fraction of a second is the counter
// of its whole second, as the contract says.
func TestWriteSubSecond(t *testing.T) {
	ctx := context.Background()
	s := pgStore(t)
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	c := limiter.Counter{Key: "{key:k}:q:daily", Start: start.Add(300 * time.Millisecond)}
	if _, err := s.Write(ctx, []limiter.CounterValue{{Counter: c, Used: 7, Seq: 2}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, []limiter.Counter{{Key: c.Key, Start: start}, c})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d values for 2 counters", len(got))
	}
	for i, v := range got {
		if v.Used != 7 || v.Seq != 2 {
			t.Errorf("value %d: got used=%d seq=%d, want 7, 2", i, v.Used, v.Seq)
		}
	}
}

func TestPing(t *testing.T) {
	ctx := context.Background()
	pool := pgPool(t, testenv.Schema(t))
	s := pgstore.New(pool)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	pool.Close()
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping on a closed pool: got nil error")
	}
}
