package proxy

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// TestForwardedChainByTrust: a trusted peer (a front proxy) passes on
// the X-Forwarded-For chain it built, with our peer appended, and its
// X-Forwarded-Proto; an untrusted peer's are replaced by what the proxy
// saw itself (SPEC §4.4).
func TestForwardedChainByTrust(t *testing.T) {
	sent := map[string]string{
		"X-Forwarded-For":   "198.51.100.7, 10.1.2.3",
		"X-Forwarded-Proto": "https",
	}
	for _, tc := range []struct {
		name      string
		trusted   bool
		xff, xfpr string
	}{
		{"trusted", true, "198.51.100.7, 10.1.2.3, 127.0.0.1", "https"},
		{"untrusted", false, "127.0.0.1", "http"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := &upstreamRecorder{}
			srv := newTestProxy(t, up, &fakeDecider{decide: allowAll}, nil)
			if !tc.trusted {
				p := srv.Config.Handler.(*Proxy)
				s := *p.Settings()
				s.Identity.Trusted = nil // the test client on 127.0.0.1 is now untrusted
				p.SetSettings(&s)
			}
			resp, body := get(t, srv.URL+"/x", sent)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			h, _ := up.last()
			if got := h.Values("X-Forwarded-For"); len(got) != 1 || got[0] != tc.xff {
				t.Errorf("upstream X-Forwarded-For = %q, want [%q]", got, tc.xff)
			}
			if got := h.Values("X-Forwarded-Proto"); len(got) != 1 || got[0] != tc.xfpr {
				t.Errorf("upstream X-Forwarded-Proto = %q, want [%q]", got, tc.xfpr)
			}
		})
	}
}

// TestQuotaHeadersNameClosestQuota: with several quotas, X-Quota-* (and
// RateLimit, when a quota is closest overall) describe the quota closest
// to exhaustion, wherever it stands in the decision: here neither first
// nor last.
func TestQuotaHeadersNameClosestQuota(t *testing.T) {
	d := &fakeDecider{decide: func(limits []limiter.Limit, cost int64) (limiter.Decision, error) {
		return limiter.Decision{Allowed: true, Statuses: []limiter.Status{
			{Limit: limiter.Limit{Name: "r-1s", Limit: 100, Window: time.Second}, Remaining: 90, Reset: 100 * time.Millisecond, Charged: true},
			{Limit: limiter.Limit{Name: "q-big", Limit: 10000, Period: daily{}}, Remaining: 9000, Reset: time.Hour, Charged: true},
			{Limit: limiter.Limit{Name: "q-close", Limit: 50, Period: daily{}}, Remaining: 4, Reset: 2 * time.Hour, Charged: true},
			{Limit: limiter.Limit{Name: "q-mid", Limit: 500, Period: daily{}}, Remaining: 300, Reset: 3 * time.Hour, Charged: true},
		}}, nil
	}}
	srv := newTestProxy(t, &upstreamRecorder{}, d, nil)
	resp, body := get(t, srv.URL+"/x", map[string]string{"X-Api-Key": "secret-1"})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	want := map[string]string{
		"X-Quota-Limit":     "50",
		"X-Quota-Remaining": "4",
		"X-Quota-Reset":     "7200",
		"Ratelimit":         `"q-close";r=4;t=7200`,
	}
	for k, v := range want {
		if got := resp.Header.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want [%q] (q-close has the fewest units left)", k, got, v)
		}
	}
}

// TestRetryAfterWholeSeconds: Retry-After (and retry_after_seconds) is
// the refusal's retry time rounded up to whole seconds, and never 0: a
// client told 0 would retry at once, to be refused again.
func TestRetryAfterWholeSeconds(t *testing.T) {
	for _, tc := range []struct {
		retry time.Duration
		want  int64
	}{
		// A store may answer a retry time of zero or less (a window that
		// frees just now, clocks apart): still 1.
		{-50 * time.Millisecond, 1},
		{0, 1},
		{time.Nanosecond, 1},
		{200 * time.Millisecond, 1},
		{time.Second, 1},
		{1200 * time.Millisecond, 2},
	} {
		t.Run(tc.retry.String(), func(t *testing.T) {
			d := &fakeDecider{decide: func(limits []limiter.Limit, cost int64) (limiter.Decision, error) {
				d, _ := allowAll(limits, cost)
				d.Allowed = false
				s := &d.Statuses[0]
				s.Exceeded, s.RetryAfter, s.Remaining, s.Charged = true, tc.retry, 0, false
				return d, nil
			}}
			srv := newTestProxy(t, &upstreamRecorder{}, d, nil)
			resp, body := get(t, srv.URL+"/x", map[string]string{"X-Api-Key": "secret-1"})
			if resp.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("status %d, want 429: %s", resp.StatusCode, body)
			}
			if got, want := resp.Header.Get("Retry-After"), strconv.FormatInt(tc.want, 10); got != want {
				t.Errorf("Retry-After = %q, want %q", got, want)
			}
			var r refusal
			if err := json.Unmarshal([]byte(body), &r); err != nil {
				t.Fatal(err)
			}
			if r.RetryAfter != tc.want {
				t.Errorf("retry_after_seconds = %d, want %d", r.RetryAfter, tc.want)
			}
		})
	}
}

// TestUpstreamCannotFakeShadowHeader: X-Gaia-Shadow-Limited on a
// response is ours alone. When no shadow limit was hit, the upstream's
// own is removed, so an upstream cannot make callers (or dashboards
// reading responses) believe one was.
func TestUpstreamCannotFakeShadowHeader(t *testing.T) {
	faker := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Gaia-Shadow-Limited", "free-1s")
		w.Write([]byte("ok"))
	})
	srv := newTestProxy(t, faker, &fakeDecider{decide: allowAll}, nil)
	resp, body := get(t, srv.URL+"/x", map[string]string{"X-Api-Key": "secret-1"})
	if resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if got := resp.Header.Values("X-Gaia-Shadow-Limited"); len(got) != 0 {
		t.Errorf("X-Gaia-Shadow-Limited = %q from the upstream reached the caller; want none (no shadow limit was hit)", got)
	}
}
