package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
)

const rulesConfig = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
admin: {listen: 127.0.0.1:0}
data_dir: {{DATA}}
redis: {url: "REDISURL", key_prefix: "PREFIX", timeout: 2s}
database: {url: "DBURL"}
defaults: {plan: free}
plans:
  anonymous: {rate: [{limit: 1000, window: 1s}]}
  free: {rate: [{limit: 1000, window: 1s}]}
keys:
  - {id: k, key: key-k}
`

// TestRuntimeRuleReachesReplicas writes a rule through one replica's admin
// API: the other enforces it within 2 s, and stops when it expires.
func TestRuntimeRuleReachesReplicas(t *testing.T) {
	text := strings.NewReplacer("REDISURL", testenv.RedisURL(t), "PREFIX", testenv.Prefix(t), "DBURL", testenv.Schema(t)).Replace(rulesConfig)
	up := newUpstream(t)
	var replicas []*instance
	for i := range 2 {
		dir := t.TempDir()
		file := writeConfig(t, filepath.Join(dir, "gaia.yaml"), text, up.URL, dir)
		if i == 0 {
			replicas = append(replicas, startMigrated(t, file))
		} else {
			replicas = append(replicas, start(t, file))
		}
	}
	a, b := replicas[0], replicas[1]
	status := func(in *instance) int {
		resp, _ := call(t, in.proxy+"/r", "X-API-Key: key-k")
		return resp.StatusCode
	}
	if status(b) != 200 || status(b) != 200 {
		t.Fatal("before the rule, b refused")
	}

	expires := time.Now().Add(4 * time.Second).UTC().Format(time.RFC3339Nano)
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
	if time.Now().Before(written.Add(3 * time.Second)) {
		t.Error("the rule stopped applying before it expired")
	}
}
