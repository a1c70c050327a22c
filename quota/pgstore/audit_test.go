package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/quota"
	"github.com/gaia-proxy/gaia-proxy/quota/quotatest"
)

func TestAudit(t *testing.T) {
	quotatest.RunAudit(t, func(t *testing.T) quotatest.Audit { return pgStore(t) })
}

// TestWriteAuditRetried: a batch written again, as after an error that
// came after its commit, stores each entry once; a different entry at
// the same time is stored.
func TestWriteAuditRetried(t *testing.T) {
	ctx := context.Background()
	s := pgStore(t)
	at := time.Date(2026, 3, 10, 12, 0, 0, 123456000, time.UTC)
	var batch []quota.AuditEntry
	for _, sub := range []string{"key:k1", "user:alice"} {
		e, err := quota.NewAuditEntry(at, "admin@127.0.0.1", "quota.reset", sub, map[string]any{"limits": []string{"daily"}})
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, e)
	}
	for range 2 {
		if err := s.WriteAudit(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	other := batch[0]
	other.Detail = []byte(`{"limits": ["monthly"]}`)
	if err := s.WriteAudit(ctx, append(batch, other)); err != nil {
		t.Fatal(err)
	}
	got, err := s.AuditLog(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Subject != "key:k1" || got[1].Subject != "user:alice" || got[2].Subject != "key:k1" {
		t.Errorf("audit log after a batch written twice and one more entry: got %+v, want 3 entries", got)
	}
}
