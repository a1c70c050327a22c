package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/gaia-proxy/gaia-proxy/quota"
	"github.com/gaia-proxy/gaia-proxy/quota/quotatest"
)

func TestAudit(t *testing.T) {
	quotatest.RunAudit(t, func(t *testing.T) quotatest.Audit { return pgStore(t) })
}

// TestWriteAuditRetriedUncommitted: a write retried while the first
// write of its entry has not committed yet (its answer lost, its
// transaction still open) waits for it, then stores the entry only if
// the first did not.
func TestWriteAuditRetriedUncommitted(t *testing.T) {
	for _, commit := range []bool{true, false} {
		name := "first write commits"
		if !commit {
			name = "first write rolls back"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			url := testenv.Schema(t)
			s, pool := pgStoreOn(t, url), pgPool(t, url)
			e, err := quota.NewAuditEntry(time.Date(2026, 3, 10, 12, 0, 0, 123456000, time.UTC), "admin@127.0.0.1", "quota.reset", "key:k1", nil)
			if err != nil {
				t.Fatal(err)
			}

			// The first write, as pgstore makes it, left open.
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			var pid int
			if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO audit_log (entry_key, at, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5, '{}')",
				e.Key, e.At, e.Actor, e.Action, e.Subject); err != nil {
				t.Fatal(err)
			}

			retried := make(chan error, 1)
			go func() { retried <- s.WriteAudit(ctx, []quota.AuditEntry{e}) }()
			// The retry must wait for the first write's transaction.
			for deadline := time.Now().Add(10 * time.Second); ; {
				var blocked bool
				if err := pool.QueryRow(ctx, "SELECT count(*) > 0 FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid))", pid).Scan(&blocked); err != nil {
					t.Fatal(err)
				}
				if blocked {
					break
				}
				select {
				case err := <-retried:
					t.Fatalf("retried WriteAudit returned (error %v) while the first write was uncommitted, want it to wait", err)
				case <-time.After(10 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatal("the retried WriteAudit did not wait for the first write")
				}
			}
			if commit {
				err = tx.Commit(ctx)
			} else {
				err = tx.Rollback(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := <-retried; err != nil {
				t.Fatalf("retried WriteAudit: %v", err)
			}
			got, err := s.AuditLog(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Key != e.Key || got[0].Subject != e.Subject {
				t.Errorf("audit log: got %+v, want the entry once (key %s)", got, e.Key)
			}
		})
	}
}
