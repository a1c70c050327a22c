package boltstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
	"github.com/gaia-proxy/gaia-proxy/quota/boltstore"
	"github.com/gaia-proxy/gaia-proxy/quota/quotatest"
)

func open(t *testing.T, path string) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// temp opens a Store in a temporary directory, closed when t ends.
func temp(t *testing.T) *boltstore.Store {
	s := open(t, filepath.Join(t.TempDir(), "gaia.db"))
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	quotatest.RunStore(t, func(t *testing.T) quota.Store { return temp(t) })
}

func TestPeriodUsage(t *testing.T) {
	quotatest.RunPeriodUsage(t, func(t *testing.T) quotatest.PeriodUsage { return temp(t) })
}

func TestRules(t *testing.T) {
	quotatest.RunRules(t, func(t *testing.T) quotatest.Rules { return temp(t) })
}

func TestAudit(t *testing.T) {
	quotatest.RunAudit(t, func(t *testing.T) quotatest.Audit { return temp(t) })
}

// TestReopen is the restart guarantee: usage written before Close is
// there after Open, in a data directory Open created.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "data", "dir", "gaia.db")
	c := limiter.Counter{Key: "{key:acme}:q:monthly", Start: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	s := open(t, path)
	if _, err := s.Write(ctx, []limiter.CounterValue{{Counter: c, Used: 5120, Seq: 77}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	defer s.Close()
	got, err := s.Load(ctx, []limiter.Counter{c})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Used != 5120 || got[0].Seq != 77 {
		t.Errorf("after reopen: got used=%d seq=%d, want used=5120 seq=77", got[0].Used, got[0].Seq)
	}
}

func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gaia.db")
	s := open(t, path)
	defer s.Close()
	_, err := boltstore.Open(path)
	if !errors.Is(err, boltstore.ErrLocked) {
		t.Fatalf("second Open: got %v, want ErrLocked", err)
	}
	if want := "data file " + path + " is locked by another gaia-proxy process"; !strings.Contains(err.Error(), want) {
		t.Errorf("second Open: got %q, want it to contain %q", err, want)
	}
}

func TestPrune(t *testing.T) {
	quotatest.RunPrune(t, func(t *testing.T) quotatest.Prune {
		s := open(t, filepath.Join(t.TempDir(), "gaia.db"))
		t.Cleanup(func() { s.Close() })
		return s
	})
}
