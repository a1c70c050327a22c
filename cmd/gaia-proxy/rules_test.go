package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
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
