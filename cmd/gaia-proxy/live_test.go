package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
)

const liveConfig = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
admin: {listen: 127.0.0.1:0}
data_dir: {{DATA}}
redis: {url: "REDISURL", key_prefix: "PREFIX", timeout: 2s}
database: {url: "DBURL"}
quota: {flush_interval: 100ms}
defaults: {plan: free}
plans:
  anonymous: {rate: [{limit: 1000, window: 1s}]}
  free: {rate: [{limit: 2, window: 1h}]}
  open: {rate: [{limit: 1000, window: 1s}]}
keys:
  - {id: a, key: key-a}
  - {id: b, key: key-b}
  - {id: k, key: key-k, plan: open}
`

// twoReplicas starts two replicas sharing Redis and PostgreSQL (reached
// at dbURL).
func twoReplicas(t *testing.T, dbURL string) (*instance, *instance) {
	t.Helper()
	text := strings.NewReplacer("REDISURL", testenv.RedisURL(t), "PREFIX", testenv.Prefix(t), "DBURL", dbURL).Replace(liveConfig)
	up := newUpstream(t)
	var out []*instance
	for i := range 2 {
		dir := t.TempDir()
		file := writeConfig(t, filepath.Join(dir, "gaia.yaml"), text, up.URL, dir)
		if i == 0 {
			out = append(out, startMigrated(t, file))
		} else {
			out = append(out, start(t, file))
		}
	}
	return out[0], out[1]
}

type message struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// TestClusterWideViews: a violation on replica A shows on replica B's
// live stream, and analytics on either replica count both replicas.
func TestClusterWideViews(t *testing.T) {
	a, b := twoReplicas(t, testenv.Schema(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(b.admin, "http")+"/ws/admin/quotas", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()

	// key-a spends its 2 on A, then is refused there; key-b on B.
	for range 3 {
		call(t, a.proxy+"/x", "X-API-Key: key-a")
		call(t, b.proxy+"/x", "X-API-Key: key-b")
	}
	for {
		_, raw, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("no violation of key:a on replica B's stream: %v", err)
		}
		var m message
		json.Unmarshal(raw, &m)
		if m.Type == "violation" && strings.Contains(string(m.Data), `"subject":"key:a"`) {
			break
		}
	}

	type totals struct {
		Allowed     int64 `json:"allowed"`
		RateLimited int64 `json:"rate_limited"`
	}
	var want = totals{Allowed: 4, RateLimited: 2}
	for _, in := range []*instance{a, b} {
		waitFor(t, 10*time.Second, "analytics counting both replicas", func() bool {
			_, body := call(t, in.admin+"/api/admin/quotas/analytics?bucket=1m")
			var got struct {
				Totals totals `json:"totals"`
			}
			json.Unmarshal([]byte(body), &got)
			return got.Totals == want
		}, in.logs)
	}
}

// TestVerifyDatabaseCut runs `gaia-proxy verify` against a running instance: it
// passes, then fails naming the database once PostgreSQL is cut away.
func TestVerifyDatabaseCut(t *testing.T) {
	dbURL := testenv.Schema(t)
	rl, relayed := postgresRelay(t, dbURL)
	a, _ := twoReplicas(t, relayed)

	var out bytes.Buffer
	args := []string{"verify", "--admin", a.admin, "--proxy", a.proxy}
	if err := run(context.Background(), args, nil, &out, &out); err != nil {
		t.Fatalf("verify against a healthy instance: %v\n%s", err, out.String())
	}
	rl.Cut()
	t.Cleanup(rl.Restore) // before the instances stop: their last flush needs the database
	out.Reset()
	err := run(context.Background(), args, nil, &out, &out)
	if err == nil || !strings.Contains(err.Error()+out.String(), "database") {
		t.Errorf("verify with the database cut: %v, want a failure naming database\n%s", err, out.String())
	}
}
