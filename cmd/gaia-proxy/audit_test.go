package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// auditResets returns the times of the audit log's quota.reset entries
// of key:k, read from PostgreSQL directly (dbURL, not the relay).
func auditResets(t *testing.T, dbURL string) []time.Time {
	t.Helper()
	var ats []time.Time
	inDatabase(t, dbURL, func(ctx context.Context, conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, `SELECT at FROM audit_log WHERE action = 'quota.reset' AND subject = 'key:k' ORDER BY id`)
		if err == nil {
			ats, err = pgx.CollectRows(rows, pgx.RowTo[time.Time])
		}
		return err
	})
	return ats
}

// TestAuditDuringPostgresOutage: a quota reset made while PostgreSQL is
// away is answered, and its audit entry (SPEC §5) lands, with the time
// of the reset, once the database is back.
func TestAuditDuringPostgresOutage(t *testing.T) {
	in, _, rl, dbURL := durableBehindRelay(t)

	for range 3 {
		if resp, _ := call(t, in.proxy+"/r", "X-API-Key: key-k"); resp.StatusCode != 200 {
			t.Fatalf("request: %d", resp.StatusCode)
		}
	}
	waitFor(t, 5*time.Second, "usage in the ledger", func() bool { return ledgerUsed(t, dbURL) == 3 }, in.logs)

	rl.Cut()
	before := time.Now()
	resp, err := http.Post(in.admin+"/api/admin/quotas/reset", "application/json", strings.NewReader(`{"subject":"key:k"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("reset while PostgreSQL is away: %d %s, want 200 (the hot path is up)", resp.StatusCode, body)
	}
	resetAt := time.Now()
	if ats := auditResets(t, dbURL); len(ats) != 0 {
		t.Fatalf("audit entries written through a cut relay: %v", ats)
	}
	time.Sleep(2 * time.Second) // the journal retries meanwhile, and fails

	rl.Restore()
	// SPEC §6: what queued while the database was away lands within 5 s.
	waitFor(t, 5*time.Second, "the reset's audit entry", func() bool { return len(auditResets(t, dbURL)) > 0 }, in.logs)
	waitFor(t, 5*time.Second, "the reset in the ledger", func() bool { return ledgerUsed(t, dbURL) == 0 }, in.logs)
	ats := auditResets(t, dbURL)
	if len(ats) != 1 {
		t.Errorf("%d audit entries of the reset, want 1", len(ats))
	}
	if at := ats[0]; at.Before(before.Add(-time.Second)) || at.After(resetAt.Add(time.Second)) {
		t.Errorf("audit entry at %v, want the time of the reset (%v to %v), not of its write", at, before, resetAt)
	}
}
