package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/gaia-proxy/gaia-proxy/quota/pgstore"
)

// TestRuntimeRuleReachesReplicas writes a rule through one replica's admin
// API: the other enforces it within 2 s, and stops when it expires.
func TestRuntimeRuleReachesReplicas(t *testing.T) {
	a, b := twoReplicas(t, testenv.Schema(t))
	status := func(in *instance) int {
		resp, _ := call(t, in.proxy+"/r", "X-API-Key: key-k")
		return resp.StatusCode
	}
	if status(b) != 200 || status(b) != 200 {
		t.Fatal("before the rule, b refused")
	}

	expiresAt := time.Now().Add(4 * time.Second).UTC()
	expires := expiresAt.Format(time.RFC3339Nano)
	body := fmt.Sprintf(`{"subject":"key:k","rate":[{"limit":1,"window":"1h"}],"expires_at":%q}`, expires)
	resp, err := http.Post(a.admin+"/api/admin/quotas/config", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("POST rule: %d", resp.StatusCode)
	}
	written := time.Now()
	// The rule's window counts b's requests from now on: one passes, then 429.
	waitFor(t, 2*time.Second, "the rule in force on b", func() bool { return status(b) == 429 }, b.logs)
	t.Logf("in force on the other replica after %v", time.Since(written).Round(time.Millisecond))
	if status(b) != 429 {
		t.Error("b admitted again under the rule")
	}
	// Expired, it stops applying by itself: no change is written.
	waitFor(t, 8*time.Second, "the rule expired on b", func() bool { return status(b) == 200 }, b.logs)
	if now := time.Now(); now.Before(expiresAt) {
		t.Errorf("the rule stopped applying %v before it expired", expiresAt.Sub(now))
	}
}

// TestRuleReloadRetried: a reload of the runtime rules that fails (here
// the rules' table is locked past the reload's 5 s bound when the change
// is announced) is tried again once the database answers, so the stored
// rule comes into force without waiting for another change. Before, it
// stayed out of force on every replica until the next change.
func TestRuleReloadRetried(t *testing.T) {
	dbURL := testenv.Schema(t)
	a, _ := twoReplicas(t, dbURL)
	status := func() int {
		resp, _ := call(t, a.proxy+"/r", "X-API-Key: key-k")
		return resp.StatusCode
	}
	if status() != 200 {
		t.Fatal("before the rule, a refused")
	}
	ctx := context.Background()
	conn := func() *pgx.Conn {
		c, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(ctx) })
		return c
	}
	writer, locker := conn(), conn()
	// The rule, stored without its announcement; then the table locked,
	// and the change announced.
	if _, err := writer.Exec(ctx, `INSERT INTO rate_limit_configs (id, subject, rate) VALUES ('rule_retried', 'key:k', '[{"limit":1,"window":"1h"}]')`); err != nil {
		t.Fatal(err)
	}
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE rate_limit_configs IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Exec(ctx, "SELECT pg_notify($1, current_schema())", pgstore.RulesChannel); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the reload failing on the locked table", func() bool {
		return strings.Contains(a.logs.String(), "rules: reload failed")
	}, a.logs)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// The rule's window counts from now: one passes, then 429.
	waitFor(t, 15*time.Second, "the rule in force after the failed reload", func() bool { return status() == 429 }, a.logs)
}
