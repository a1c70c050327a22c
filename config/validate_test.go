package config

import (
	"strings"
	"testing"
	"time"
)

// TestValidateFoldsUserIDs: user ids are case-insensitive, also in a
// Config built in code, and two spellings of one id are an error.
func TestValidateFoldsUserIDs(t *testing.T) {
	c := defaultConfig()
	c.Upstream = "http://127.0.0.1:9000"
	c.Plans = map[string]Plan{"free": {}, "pro": {}, "anonymous": {}}
	c.Users = map[string]User{"Alice": {Plan: "Pro"}, "bob": {}}
	c.Keys = []Key{{ID: "k", Key: "secret", User: "ALICE"}}
	for i := range 2 { // twice: normalising is idempotent
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate #%d: %v", i+1, err)
		}
	}
	if u, ok := c.Users["alice"]; !ok || u.Plan != "pro" || len(c.Users) != 2 {
		t.Errorf("users = %+v, want alice (pro) and bob", c.Users)
	}
	if c.Keys[0].User != "alice" {
		t.Errorf("keys[0].user = %q, want alice", c.Keys[0].User)
	}

	c.Users = map[string]User{"Alice": {}, "alice": {}}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "users.Alice: names the same user as users.alice") {
		t.Errorf("Validate with users Alice and alice: %v, want users.Alice named", err)
	}
}

// TestValidateTimezone: quota.timezone must name a zone every replica
// reads alike.
func TestValidateTimezone(t *testing.T) {
	for tz, want := range map[string]string{
		"UTC": "", "Europe/Paris": "", "America/New_York": "",
		"Local":      `quota.timezone: must name a zone, not "Local"`,
		"":           `quota.timezone: must name a zone, not ""`,
		"Mars/Olymp": `quota.timezone: unknown time zone`,
	} {
		c := defaultConfig()
		c.Upstream = "http://127.0.0.1:9000"
		c.Quota.Timezone = tz
		err := c.Validate()
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("quota.timezone %q: %v, want %q", tz, err, want)
		}
	}
}

// TestFoldedTwiceInYAML: a file naming one user or plan in two
// spellings is refused, naming both, rather than one silently winning.
func TestFoldedTwiceInYAML(t *testing.T) {
	_, err := load("gaia.yaml", []byte("upstream: http://127.0.0.1:9000\nplans:\n  Pro: {}\n  free: {}\n  pro: {}\nusers:\n  Alice: {plan: pro}\n  alice: {plan: free}\n"), LoadOptions{})
	for _, want := range []string{"plans.pro (line 5): names the same plan as plans.Pro", "users.alice (line 8): names the same user as users.Alice"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("load: %v; want %q", err, want)
		}
	}
}

// TestValidateLimitCaps: the config takes the admin API's caps on limit
// lists (see testdata/limit_caps.yaml), with the sizes that made
// RateLimit-Policy headers clients refuse.
func TestValidateLimitCaps(t *testing.T) {
	c := defaultConfig()
	c.Upstream = "http://127.0.0.1:9000"
	rate := make([]Limit, 2000)
	for i := range rate {
		rate[i] = Limit{Limit: 10, Window: time.Duration(i+1) * time.Second}
	}
	c.Plans = map[string]Plan{"anonymous": {}, "free": {Limits: Limits{Rate: rate}},
		"pro": {Limits: Limits{Quota: []Limit{{Name: strings.Repeat("n", 500000), Limit: 10, Period: "daily"}}}}}
	err := c.Validate()
	for _, want := range []string{"plans.free.rate: at most 16 limits, got 2000", "plans.pro.quota[0].name: at most 64 bytes, got 500000"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %.300v; want %q", err, want)
		}
	}
}
