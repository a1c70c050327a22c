package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/jackc/pgx/v5"
)

const pgConfig = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
admin: {listen: 127.0.0.1:0}
database: {url: "DBURL"}
quota: {timezone: {{ZONE}}, flush_interval: 100ms}
defaults: {plan: metered}
plans:
  anonymous: {rate: [{limit: 100, window: 1h}]}
  metered:
    quota: [{limit: 3, period: daily}]
keys:
  - {id: k, key: key-k}
`

// TestPostgresLedger runs migrate, check and serve against a fresh
// schema: pending migrations are refused, usage and violations land in
// the ledger, and a runtime rule written to the table takes effect.
func TestPostgresLedger(t *testing.T) {
	dburl := testenv.Schema(t)
	up := newUpstream(t)
	dir := t.TempDir()
	file := writeConfig(t, filepath.Join(dir, "gaia.yaml"), strings.Replace(pgConfig, "DBURL", dburl, 1), up.URL, dir)
	ctx := context.Background()

	var out bytes.Buffer
	if err := run(ctx, []string{"check", "--config", file}, nil, &out, &out); err == nil || !strings.Contains(out.String(), "FAIL  migrations") {
		t.Errorf("check before migrate: %v\n%s", err, out.String())
	}
	logs := &logBuffer{}
	err := serve(ctx, serveOptions{LoadOptions: loadFile(file)}, logs.logf, nil)
	if err == nil || !strings.Contains(err.Error(), "gaia-proxy migrate") {
		t.Fatalf("serve on an unmigrated database: %v, want a refusal naming migrate", err)
	}
	out.Reset()
	if err := run(ctx, []string{"migrate", "--config", file}, nil, &out, &out); err != nil || !strings.Contains(out.String(), "applied 0001_rate_limiting.sql") {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := run(ctx, []string{"migrate", "--config", file}, nil, &out, &out); err != nil || !strings.Contains(out.String(), "up to date") {
		t.Errorf("second migrate: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := run(ctx, []string{"check", "--config", file}, nil, &out, &out); err != nil {
		t.Errorf("check after migrate: %v\n%s", err, out.String())
	}

	in := start(t, file)
	for i := 0; i < 3; i++ {
		if resp, _ := call(t, in.proxy+"/q", "X-API-Key: key-k"); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	if resp, _ := call(t, in.proxy+"/q", "X-API-Key: key-k"); resp.StatusCode != 429 {
		t.Fatalf("fourth request: %d, want 429", resp.StatusCode)
	}
	in.stop(t)

	conn, err := pgx.Connect(ctx, dburl)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var used int64
	if err := conn.QueryRow(ctx, `SELECT used FROM quota_usage WHERE counter LIKE '%key:k/qdaily'`).Scan(&used); err != nil || used != 3 {
		t.Errorf("ledger usage = %d, %v; want 3", used, err)
	}
	var violations, allowed int64
	conn.QueryRow(ctx, `SELECT count(*) FROM violations WHERE subject = 'key:k' AND kind = 'quota_exceeded'`).Scan(&violations)
	conn.QueryRow(ctx, `SELECT coalesce(sum(allowed), 0) FROM usage_rollups WHERE subject = 'key:k'`).Scan(&allowed)
	if violations != 1 || allowed != 3 {
		t.Errorf("violations %d, allowed roll-up %d; want 1 and 3", violations, allowed)
	}

	// A runtime rule raising the quota, written straight into the table,
	// is loaded at start; and one added while running arrives by NOTIFY.
	if _, err := conn.Exec(ctx, `INSERT INTO rate_limit_configs (id, subject, quota) VALUES ('r1', 'key:k', '[{"limit": 4, "period": "daily"}]')`); err != nil {
		t.Fatal(err)
	}
	in2 := start(t, file)
	if resp, _ := call(t, in2.proxy+"/q", "X-API-Key: key-k"); resp.StatusCode != 200 || resp.Header.Get("X-Quota-Limit") != "4" {
		t.Errorf("with the rule: %d, X-Quota-Limit %q; want 200 and 4 (usage 3 kept from the ledger)", resp.StatusCode, resp.Header.Get("X-Quota-Limit"))
	}
	if _, err := conn.Exec(ctx, `UPDATE rate_limit_configs SET quota = '[{"limit": 6, "period": "daily"}]' WHERE id = 'r1'; SELECT pg_notify('gaia_rules', current_schema())`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		resp, _ := call(t, in2.proxy+"/q", "X-API-Key: key-k")
		if resp.Header.Get("X-Quota-Limit") == "6" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the changed rule was not in force within 2s\n%s", in2.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
