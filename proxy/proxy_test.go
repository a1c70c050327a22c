package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// fakeDecider is a Decider whose answers the test chooses.
type fakeDecider struct {
	decide    func(limits []limiter.Limit, cost int64) (limiter.Decision, error)
	calls     atomic.Int64
	refunds   atomic.Int64
	refundErr error // Refund's answer, when set
}

func (f *fakeDecider) Decide(_ context.Context, limits []limiter.Limit, cost int64) (limiter.Decision, error) {
	f.calls.Add(1)
	return f.decide(limits, cost)
}

func (f *fakeDecider) Refund(_ context.Context, d *limiter.Decision, cost int64) error {
	if f.refundErr != nil {
		return f.refundErr
	}
	f.refunds.Add(cost)
	return nil
}

// allowAll admits every request with each limit half used.
func allowAll(limits []limiter.Limit, cost int64) (limiter.Decision, error) {
	d := limiter.Decision{Allowed: true}
	for _, l := range limits {
		d.Statuses = append(d.Statuses, limiter.Status{Limit: l, Used: l.Limit / 2, Remaining: l.Limit - l.Limit/2, Reset: 500 * time.Millisecond, Charged: true})
	}
	return d, nil
}

type daily struct{}

func (daily) Bounds(t time.Time) (time.Time, time.Time) {
	s := t.UTC().Truncate(24 * time.Hour)
	return s, s.Add(24 * time.Hour)
}
func (daily) String() string { return "daily" }

func testPolicy(t *testing.T) *limiter.Policy {
	t.Helper()
	p, err := limiter.NewPolicy(limiter.PolicyConfig{
		DefaultPlan: "free",
		Plans: []limiter.Plan{
			{Name: "anonymous", Limits: limiter.Limits{Rate: []limiter.Spec{{Limit: 5, Window: time.Second}}}},
			{Name: "free", Limits: limiter.Limits{
				Rate:  []limiter.Spec{{Limit: 10, Window: time.Second}},
				Quota: []limiter.Spec{{Limit: 1000, Period: daily{}, Refundable: true}},
			}},
		},
		Keys: []limiter.Key{{ID: "k1", Hash: sha256.Sum256([]byte("secret-1")), User: "alice"}},
		Routes: []limiter.Route{
			{Name: "health", Path: "/health", Exempt: true},
			{Name: "confirm", Path: "/confirm", Cost: 5},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// upstreamRecorder is an upstream that remembers the last request's
// headers, and every request's method and request-target.
type upstreamRecorder struct {
	mu      sync.Mutex
	header  http.Header
	hits    int
	targets []string
}

func (u *upstreamRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.header, u.hits = r.Header.Clone(), u.hits+1
	u.targets = append(u.targets, r.Method+" "+r.RequestURI)
	u.mu.Unlock()
	if r.URL.Path == "/fail" {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.Header().Set("X-Ratelimit-Limit", "upstream-own")
	io.WriteString(w, "ok")
}

func (u *upstreamRecorder) last() (http.Header, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.header, u.hits
}

// seen returns the request-targets so far and the last headers.
func (u *upstreamRecorder) seen() ([]string, http.Header) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.targets), u.header
}

// newTestProxy serves a Proxy in front of upstream on loopback.
func newTestProxy(t *testing.T, upstream http.Handler, d Decider, o *Options) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	p := New(u, d, &Settings{Policy: testPolicy(t), Identity: *testIdentity()}, o)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestForwardedHeaders(t *testing.T) {
	up := &upstreamRecorder{}
	d := &fakeDecider{decide: allowAll}
	srv := newTestProxy(t, up, d, nil)

	resp, _ := get(t, srv.URL+"/x", map[string]string{
		"X-Api-Key":      "secret-1",
		"X-Gaia-Subject": "key:admin",
		"X-Gaia-Plan":    "enterprise",
		"X-Gaia-Other":   "spoof",
	})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	h, _ := up.last()
	want := map[string]string{
		"X-Gaia-Subject": "key:k1", "X-Gaia-User": "alice", "X-Gaia-Key-Id": "k1", "X-Gaia-Plan": "free",
		"X-Gaia-Other": "", "X-Api-Key": "secret-1", "X-Forwarded-For": "127.0.0.1",
	}
	for k, v := range want {
		if got := strings.Join(h.Values(k), ","); got != v {
			t.Errorf("upstream %s = %q, want %q", k, got, v)
		}
	}
	if got := resp.Header.Values("X-Ratelimit-Limit"); len(got) != 1 || got[0] != "10" {
		t.Errorf("X-RateLimit-Limit = %q, want [10] (ours replaces the upstream's)", got)
	}
	for _, k := range []string{"Ratelimit-Policy", "Ratelimit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset", "X-Quota-Limit", "X-Quota-Remaining", "X-Quota-Reset"} {
		if resp.Header.Get(k) == "" {
			t.Errorf("response lacks %s", k)
		}
	}
}

// TestHeadersAfterEarlyHints: an upstream's 103 Early Hints does not take
// the rate-limit headers off its final response.
func TestHeadersAfterEarlyHints(t *testing.T) {
	hints := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("X-Ratelimit-Limit", "999")
		io.WriteString(w, "ok")
	})
	srv := newTestProxy(t, hints, &fakeDecider{decide: allowAll}, nil)
	resp, body := get(t, srv.URL+"/x", map[string]string{"X-Api-Key": "secret-1"})
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if got := resp.Header.Values("X-Ratelimit-Limit"); len(got) != 1 || got[0] != "10" {
		t.Errorf("X-RateLimit-Limit = %q, want [10]", got)
	}
	if resp.Header.Get("Ratelimit-Policy") == "" {
		t.Error("the final response lacks RateLimit-Policy")
	}
}

func TestUntrustedPeerCannotAssertUser(t *testing.T) {
	up := &upstreamRecorder{}
	var subjects []string
	var mu sync.Mutex
	d := &fakeDecider{decide: func(l []limiter.Limit, c int64) (limiter.Decision, error) {
		mu.Lock()
		subjects = append(subjects, l[0].Key)
		mu.Unlock()
		return allowAll(l, c)
	}}
	srv := newTestProxy(t, up, d, nil)
	p := srv.Config.Handler.(*Proxy)
	s := *p.Settings()
	s.Identity.Trusted = nil // the test client on 127.0.0.1 is now untrusted
	p.SetSettings(&s)

	get(t, srv.URL+"/x", map[string]string{"X-User-Id": "alice", "X-Forwarded-For": "1.2.3.4"})
	h, _ := up.last()
	if h.Get("X-User-Id") != "" {
		t.Errorf("user header from an untrusted peer was forwarded: %q", h.Get("X-User-Id"))
	}
	if got := h.Get("X-Gaia-Subject"); got != "ip:127.0.0.1" {
		t.Errorf("subject = %q, want ip:127.0.0.1 (not the spoofed user or XFF)", got)
	}
	if got := h.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want only the real peer", got)
	}
}

func TestUnauthorized(t *testing.T) {
	up := &upstreamRecorder{}
	d := &fakeDecider{decide: allowAll}
	srv := newTestProxy(t, up, d, nil)
	for _, tc := range []struct {
		header map[string]string
		code   string
	}{
		{map[string]string{"X-Api-Key": "nope"}, "invalid_api_key"},
		{map[string]string{"Authorization": "Bearer"}, "invalid_api_key"},
		{map[string]string{"Authorization": "Bearer "}, "invalid_api_key"},
	} {
		resp, body := get(t, srv.URL+"/x", tc.header)
		var e errorBody
		json.Unmarshal([]byte(body), &e)
		if resp.StatusCode != 401 || e.Error != tc.code {
			t.Errorf("%v: %d %s, want 401 %s", tc.header, resp.StatusCode, body, tc.code)
		}
	}
	if _, hits := up.last(); hits != 0 {
		t.Errorf("upstream saw %d unauthorized requests", hits)
	}

	p := srv.Config.Handler.(*Proxy)
	s := *p.Settings()
	s.Identity.RejectAnonymous = true
	p.SetSettings(&s)
	resp, body := get(t, srv.URL+"/x", nil)
	if resp.StatusCode != 401 || !strings.Contains(body, `"missing_credentials"`) {
		t.Errorf("anonymous with reject: %d %s", resp.StatusCode, body)
	}
}

func TestRefused(t *testing.T) {
	up := &upstreamRecorder{}
	d := &fakeDecider{decide: func(limits []limiter.Limit, cost int64) (limiter.Decision, error) {
		d, _ := allowAll(limits, cost)
		d.Allowed = false
		d.Statuses[0].Exceeded, d.Statuses[0].RetryAfter = true, 1300*time.Millisecond
		d.Statuses[0].Remaining = 0
		return d, nil
	}}
	srv := newTestProxy(t, up, d, nil)
	resp, body := get(t, srv.URL+"/x", map[string]string{"X-Api-Key": "secret-1"})
	if resp.StatusCode != 429 {
		t.Fatalf("status %d, want 429", resp.StatusCode)
	}
	if got := resp.Header.Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After = %q, want 2 (1.3s rounded up)", got)
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q", got)
	}
	var r refusal
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	want := refusal{Error: "rate_limited", Message: r.Message, Limit: quota.LimitRef{Name: "free-1s", Limit: 10, Window: "1s"}, RetryAfter: 2, Subject: "key:k1"}
	if r != want {
		t.Errorf("body = %+v, want %+v", r, want)
	}
	if _, hits := up.last(); hits != 0 {
		t.Error("refused request was forwarded")
	}
}

func TestQuotaExceededBody(t *testing.T) {
	d := &fakeDecider{decide: func(limits []limiter.Limit, cost int64) (limiter.Decision, error) {
		d, _ := allowAll(limits, cost)
		d.Allowed = false
		d.Statuses[1].Exceeded, d.Statuses[1].RetryAfter = true, 5*time.Hour
		return d, nil
	}}
	srv := newTestProxy(t, &upstreamRecorder{}, d, nil)
	resp, body := get(t, srv.URL+"/x", map[string]string{"X-Api-Key": "secret-1"})
	if resp.StatusCode != 429 || !strings.Contains(body, `"error":"quota_exceeded"`) || !strings.Contains(body, `"period":"daily"`) {
		t.Errorf("%d %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Retry-After"); got != "18000" {
		t.Errorf("Retry-After = %q, want 18000", got)
	}
}

func TestExemptAndCost(t *testing.T) {
	var lastCost atomic.Int64
	d := &fakeDecider{decide: func(l []limiter.Limit, c int64) (limiter.Decision, error) {
		lastCost.Store(c)
		return allowAll(l, c)
	}}
	srv := newTestProxy(t, &upstreamRecorder{}, d, nil)
	resp, _ := get(t, srv.URL+"/health", nil)
	if resp.StatusCode != 200 || d.calls.Load() != 0 || resp.Header.Get("Ratelimit-Policy") != "" {
		t.Errorf("exempt route: status %d, %d decisions, policy header %q", resp.StatusCode, d.calls.Load(), resp.Header.Get("Ratelimit-Policy"))
	}
	get(t, srv.URL+"/confirm", nil)
	if lastCost.Load() != 5 {
		t.Errorf("cost = %d, want 5", lastCost.Load())
	}
}

func TestLimiterUnavailable(t *testing.T) {
	d := &fakeDecider{decide: func([]limiter.Limit, int64) (limiter.Decision, error) {
		return limiter.Decision{}, errors.Join(limiter.ErrUnavailable, errors.New("dial tcp: secret-host:6379 refused"))
	}}
	var logged strings.Builder
	var mu sync.Mutex
	logf := func(f string, a ...any) { mu.Lock(); fmt.Fprintf(&logged, f, a...); mu.Unlock() }
	srv := newTestProxy(t, &upstreamRecorder{}, d, &Options{Logf: logf})
	resp, body := get(t, srv.URL+"/x", nil)
	if resp.StatusCode != 503 || !strings.Contains(body, `"limiter_unavailable"`) || strings.Contains(body, "secret-host") {
		t.Errorf("%d %s", resp.StatusCode, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logged.String(), "secret-host") {
		t.Errorf("the cause did not reach the log: %q", logged.String())
	}
}

// TestCallerLeftDuringDecision: a caller who leaves while the limiter
// decides is not a limiter failure, and is not logged as one.
func TestCallerLeftDuringDecision(t *testing.T) {
	d := &fakeDecider{decide: func([]limiter.Limit, int64) (limiter.Decision, error) {
		return limiter.Decision{}, fmt.Errorf("redisstore: decide: %w", context.Canceled)
	}}
	var logged strings.Builder
	var mu sync.Mutex
	logf := func(f string, a ...any) { mu.Lock(); fmt.Fprintf(&logged, f, a...); mu.Unlock() }
	u, _ := url.Parse("http://upstream.invalid")
	p := New(u, d, &Settings{Policy: testPolicy(t), Identity: *testIdentity()}, &Options{Logf: logf})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := httptest.NewRequestWithContext(ctx, "GET", "/x", nil)
	r.RemoteAddr = "127.0.0.1:5000"
	w := httptest.NewRecorder()
	p.ServeHTTP(w, r)
	mu.Lock()
	defer mu.Unlock()
	if w.Code != 499 || d.calls.Load() != 1 || logged.Len() > 0 {
		t.Errorf("status %d after %d decisions, logged %q; want 499, 1, nothing", w.Code, d.calls.Load(), logged.String())
	}
}

func TestUpstreamErrors(t *testing.T) {
	d := &fakeDecider{decide: allowAll}
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	srv := newTestProxy(t, slow, d, &Options{UpstreamTimeout: 100 * time.Millisecond, Logf: t.Logf})
	resp, body := get(t, srv.URL+"/x", map[string]string{"X-Api-Key": "secret-1"})
	if resp.StatusCode != 504 || !strings.Contains(body, `"upstream_timeout"`) {
		t.Errorf("slow upstream: %d %s", resp.StatusCode, body)
	}
	if d.refunds.Load() != 1 {
		t.Errorf("refunded %d units after a 504, want 1", d.refunds.Load())
	}

	dead := httptest.NewServer(http.NotFoundHandler())
	u, _ := url.Parse(dead.URL)
	dead.Close()
	p := New(u, d, &Settings{Policy: testPolicy(t), Identity: *testIdentity()}, &Options{Logf: t.Logf})
	srv2 := httptest.NewServer(p)
	defer srv2.Close()
	resp, body = get(t, srv2.URL+"/x", nil)
	if resp.StatusCode != 502 || !strings.Contains(body, `"upstream_unavailable"`) || resp.Header.Get("Ratelimit-Policy") == "" {
		t.Errorf("dead upstream: %d %s %v", resp.StatusCode, body, resp.Header)
	}
}

// TestErrorLogQuiet: a dead upstream fails every request; the log gets
// one line per errorQuiet, then one saying how many were held back.
func TestErrorLogQuiet(t *testing.T) {
	var (
		mu    sync.Mutex
		lines []string
		clock atomic.Int64
	)
	logf := func(f string, a ...any) { mu.Lock(); lines = append(lines, fmt.Sprintf(f, a...)); mu.Unlock() }
	start := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { return start.Add(time.Duration(clock.Load())) }
	dead := httptest.NewServer(http.NotFoundHandler())
	u, _ := url.Parse(dead.URL)
	dead.Close()
	p := New(u, &fakeDecider{decide: allowAll}, &Settings{Policy: testPolicy(t), Identity: *testIdentity()}, &Options{Logf: logf, Now: now})
	srv := httptest.NewServer(p)
	defer srv.Close()
	for range 20 {
		if resp, body := get(t, srv.URL+"/x", nil); resp.StatusCode != 502 {
			t.Fatalf("dead upstream: %d %s", resp.StatusCode, body)
		}
	}
	clock.Add(int64(errorQuiet))
	get(t, srv.URL+"/y", nil)
	mu.Lock()
	defer mu.Unlock()
	if len(lines) != 2 || !strings.Contains(lines[0], "GET /x: upstream_unavailable") ||
		!strings.Contains(lines[1], "GET /y: upstream_unavailable") || !strings.HasSuffix(lines[1], "(and 19 more like it since the last one shown)") {
		t.Errorf("logged %d lines, want 2 (the first, then one with the 19 held back):\n%s", len(lines), strings.Join(lines, "\n"))
	}
}

// TestRefundOnUpstreamFailure: a failed request's cost goes back to its
// count-success quota (cost 1; allowAll leaves the quota of 1000 at 500
// used), and the response's quota headers say so: 500 remaining after a
// 200, 501 after a 500 from the upstream or a 502 of the proxy's own,
// unless the refund failed.
func TestRefundOnUpstreamFailure(t *testing.T) {
	d := &fakeDecider{decide: allowAll}
	srv := newTestProxy(t, &upstreamRecorder{}, d, nil)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL, _ := url.Parse(dead.URL)
	dead.Close()
	unreachable := httptest.NewServer(New(deadURL, d, &Settings{Policy: testPolicy(t), Identity: *testIdentity()}, &Options{Logf: t.Logf}))
	defer unreachable.Close()
	key := map[string]string{"X-Api-Key": "secret-1"}
	for _, tc := range []struct {
		name, url string
		refundErr error
		status    int
		refunds   int64
		remaining string
	}{
		{"200", srv.URL + "/ok", nil, 200, 0, "500"},
		{"500 from the upstream", srv.URL + "/fail", nil, 500, 1, "501"},
		{"502 of the proxy", unreachable.URL + "/x", nil, 502, 2, "501"},
		{"refund failed", srv.URL + "/fail", errors.New("redis away"), 500, 2, "500"},
	} {
		d.refundErr = tc.refundErr
		resp, _ := get(t, tc.url, key)
		if resp.StatusCode != tc.status || d.refunds.Load() != tc.refunds || resp.Header.Get("X-Quota-Remaining") != tc.remaining {
			t.Errorf("%s: %d, %d units refunded in all, X-Quota-Remaining %q; want %d, %d, %q", tc.name,
				resp.StatusCode, d.refunds.Load(), resp.Header.Get("X-Quota-Remaining"), tc.status, tc.refunds, tc.remaining)
		}
	}
}

func TestShadowHeader(t *testing.T) {
	up := &upstreamRecorder{}
	d := &fakeDecider{decide: func(l []limiter.Limit, c int64) (limiter.Decision, error) {
		d, _ := allowAll(l, c)
		d.Statuses[0].Limit.Shadow, d.Statuses[0].Exceeded = true, true
		return d, nil
	}}
	srv := newTestProxy(t, up, d, nil)
	resp, _ := get(t, srv.URL+"/x", map[string]string{"X-Api-Key": "secret-1", "X-Gaia-Shadow-Limited": "spoof"})
	h, _ := up.last()
	if resp.StatusCode != 200 || resp.Header.Get("X-Gaia-Shadow-Limited") != "free-1s" || h.Get("X-Gaia-Shadow-Limited") != "free-1s" {
		t.Errorf("status %d, response %q, upstream %q; want 200 and free-1s on both",
			resp.StatusCode, resp.Header.Get("X-Gaia-Shadow-Limited"), h.Get("X-Gaia-Shadow-Limited"))
	}
}

func TestServerSentEventsFlush(t *testing.T) {
	release := make(chan struct{})
	sse := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "data: second\n\n")
	})
	srv := newTestProxy(t, sse, &fakeDecider{decide: allowAll}, nil)
	resp, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	close(release) // only now may the upstream finish: the first event came through alone
	if err != nil || line != "data: first\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
}

func TestStreamingUpload(t *testing.T) {
	gotFirst := make(chan struct{})
	var total atomic.Int64
	sink := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64<<10)
		first := true
		for {
			n, err := r.Body.Read(buf)
			total.Add(int64(n))
			if n > 0 && first {
				close(gotFirst)
				first = false
			}
			if err != nil {
				break
			}
		}
	})
	srv := newTestProxy(t, sink, &fakeDecider{decide: allowAll}, nil)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		resp, err := http.Post(srv.URL+"/upload", "application/octet-stream", pr)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	chunk := make([]byte, 1<<20)
	pw.Write(chunk)
	// The upstream must see the first megabyte while the client still
	// holds the rest: the proxy streams, it does not buffer.
	select {
	case <-gotFirst:
	case <-time.After(10 * time.Second):
		t.Fatal("upstream saw nothing of a streaming upload")
	}
	for i := 0; i < 31; i++ {
		pw.Write(chunk)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if total.Load() != 32<<20 {
		t.Errorf("upstream got %d bytes, want %d", total.Load(), 32<<20)
	}
}

func TestWebSocketPassThrough(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		typ, msg, err := c.Read(r.Context())
		if err != nil {
			return
		}
		c.Write(r.Context(), typ, append([]byte("echo: "), msg...))
		c.Close(websocket.StatusNormalClosure, "")
	})
	d := &fakeDecider{decide: allowAll}
	srv := newTestProxy(t, echo, d, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", &websocket.DialOptions{
		HTTPHeader: http.Header{"X-Api-Key": {"secret-1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if resp.Header.Get("Ratelimit-Policy") == "" {
		t.Error("upgrade response lacks rate-limit headers")
	}
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	_, msg, err := c.Read(ctx)
	if err != nil || string(msg) != "echo: hi" {
		t.Fatalf("read %q, %v", msg, err)
	}
	if d.calls.Load() != 1 {
		t.Errorf("decisions = %d, want 1", d.calls.Load())
	}
}

func TestRateLimitHeaderSyntax(t *testing.T) {
	d := limiter.Decision{Statuses: []limiter.Status{
		{Limit: limiter.Limit{Name: "free-1s", Limit: 10, Window: time.Second}, Remaining: 3, Reset: 200 * time.Millisecond},
		{Limit: limiter.Limit{Name: "free-1m", Limit: 300, Window: time.Minute}, Remaining: 3, Reset: 30 * time.Second},
		{Limit: limiter.Limit{Name: "free-daily", Limit: 10000, Period: daily{}}, Remaining: 9000, Reset: 2 * time.Hour},
		{Limit: limiter.Limit{Name: `odd"name`, Limit: 1, Window: time.Second, Shadow: true}, Remaining: 0},
	}}
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	got := map[string]string{}
	x := &exchange{}
	rateLimitHeaders(x, &d, now)
	for _, kv := range x.headers[:x.nheaders] {
		got[kv.name] = kv.value
	}
	want := map[string]string{
		"Ratelimit-Policy":      `"free-1s";q=10;w=1, "free-1m";q=300;w=60, "free-daily";q=10000;w=86400`,
		"Ratelimit":             `"free-1m";r=3;t=30`,
		"X-Ratelimit-Limit":     "300",
		"X-Ratelimit-Remaining": "3",
		"X-Ratelimit-Reset":     "30",
		"X-Quota-Limit":         "10000",
		"X-Quota-Remaining":     "9000",
		"X-Quota-Reset":         "7200",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d headers, want %d: %v", len(got), len(want), got)
	}
	if b := appendSFString(nil, `a"b\c`+"\n"); string(b) != `"a\"b\\c?"` {
		t.Errorf("sf-string = %s", b)
	}
}

func TestObserve(t *testing.T) {
	var mu sync.Mutex
	var events []quota.Event
	refuse := atomic.Int64{} // index of the limit to exceed, -1 none
	shadow := atomic.Bool{}
	d := &fakeDecider{decide: func(l []limiter.Limit, c int64) (limiter.Decision, error) {
		d, _ := allowAll(l, c)
		if i := refuse.Load(); i >= 0 {
			d.Statuses[i].Exceeded = true
			d.Statuses[i].Limit.Shadow = shadow.Load()
			d.Allowed = shadow.Load()
		}
		return d, nil
	}}
	up := httptest.NewServer(&upstreamRecorder{})
	defer up.Close()
	u, _ := url.Parse(up.URL)
	p := New(u, d, &Settings{Policy: testPolicy(t), Identity: *testIdentity()}, &Options{Observe: func(e quota.Event) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}})
	srv := httptest.NewServer(p)
	defer srv.Close()

	refuse.Store(-1)
	get(t, srv.URL+"/confirm", map[string]string{"X-Api-Key": "secret-1"})
	refuse.Store(0)
	get(t, srv.URL+"/x", map[string]string{"X-Api-Key": "secret-1"})
	refuse.Store(1)
	get(t, srv.URL+"/x", map[string]string{"X-Api-Key": "secret-1"})
	shadow.Store(true)
	refuse.Store(0)
	get(t, srv.URL+"/x", map[string]string{"X-Api-Key": "secret-1"})
	get(t, srv.URL+"/health", nil)                                  // exempt: no event
	get(t, srv.URL+"/x", map[string]string{"X-Api-Key": "unknown"}) // 401: no event

	mu.Lock()
	defer mu.Unlock()
	type brief struct {
		outcome, route, limit string
		shadow                bool
	}
	var got []brief
	for i, e := range events {
		b := brief{outcome: e.Outcome.String(), route: e.Route}
		if e.Violated != nil {
			b.limit, b.shadow = e.Violated.Name, e.Violated.Shadow
		}
		if i < 4 && (e.Subject != "key:k1" || e.User != "alice" || e.Method != "GET" || e.Time.IsZero()) {
			t.Errorf("event %+v lacks the request's identity", e)
		}
		got = append(got, b)
	}
	want := []brief{
		{"allowed", "confirm", "", false},
		{"rate_limited", "", "free-1s", false},
		{"quota_exceeded", "", "free-daily", false},
		{"allowed", "", "free-1s", true},
		{"exempt", "health", "", false},
		{"unauthorized", "", "", false},
	}
	if !slices.Equal(got, want) {
		t.Errorf("events:\n got %+v\nwant %+v", got, want)
	}
}

func TestUpstreamHook(t *testing.T) {
	var mu sync.Mutex
	var got []string
	hook := func(route string, status int, took time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, fmt.Sprintf("%s %d", route, status))
		if took <= 0 {
			t.Errorf("took = %v", took)
		}
	}
	up := httptest.NewServer(&upstreamRecorder{})
	u, _ := url.Parse(up.URL)
	p := New(u, &fakeDecider{decide: allowAll}, &Settings{Policy: testPolicy(t), Identity: *testIdentity()}, &Options{Upstream: hook, Logf: t.Logf})
	srv := httptest.NewServer(p)
	defer srv.Close()
	get(t, srv.URL+"/confirm", nil)
	get(t, srv.URL+"/fail", nil)
	up.Close()
	get(t, srv.URL+"/x", nil)
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"confirm 200", " 500", " 502"}; !slices.Equal(got, want) {
		t.Errorf("upstream hook saw %q, want %q", got, want)
	}
}

// TestNoRefundWhenCallerLeaves: a caller that hangs up before the
// upstream answers stays charged, even for a count-success quota: the
// upstream may have done the work.
func TestNoRefundWhenCallerLeaves(t *testing.T) {
	d := &fakeDecider{decide: allowAll}
	arrived, release := make(chan struct{}), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
	}))
	defer up.Close()
	defer close(release) // before up.Close, which waits for its handler
	u, _ := url.Parse(up.URL)
	p := New(u, d, &Settings{Policy: testPolicy(t), Identity: *testIdentity()}, &Options{Logf: t.Logf})
	handled := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(handled)
		p.ServeHTTP(w, r)
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/x", nil)
	req.Header.Set("X-Api-Key", "secret-1")
	go func() { <-arrived; cancel() }()
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the request was answered (%d) after its caller left", resp.StatusCode)
	}
	<-handled
	if n := d.refunds.Load(); n != 0 {
		t.Errorf("refunded %d units to a caller that hung up, want 0", n)
	}
}

// TestStalledUploadTimesOut: an upstream that stops reading a request
// body fails the request with 504 after upstream_timeout of no progress,
// rather than holding it as long as the upstream likes.
func TestStalledUploadTimesOut(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	stalled := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // reads nothing of the body
	})
	srv := newTestProxy(t, stalled, &fakeDecider{decide: allowAll}, &Options{UpstreamTimeout: 200 * time.Millisecond, Logf: t.Logf})
	body := io.LimitReader(zeros{}, 256<<20)                        // far more than socket buffers hold
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second) // a hang, not a timing
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/upload", body)
	req.Header.Set("X-Api-Key", "secret-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("upload to an upstream that reads nothing: %v (want a 504 within upstream_timeout of the stall)", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(b), `"upstream_timeout"`) {
		t.Errorf("upload to an upstream that reads nothing: %d %s, want 504 upstream_timeout", resp.StatusCode, b)
	}
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// TestAcceptEncodingAsSent: the proxy does not ask the upstream for a
// compression the client did not ask for.
func TestAcceptEncodingAsSent(t *testing.T) {
	seen := make(chan []string, 2)
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen <- r.Header["Accept-Encoding"] })
	srv := newTestProxy(t, up, &fakeDecider{decide: allowAll}, &Options{Logf: t.Logf})
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	for _, ae := range []string{"", "br"} {
		req, _ := http.NewRequest("GET", srv.URL+"/x", nil)
		req.Header.Set("X-Api-Key", "secret-1")
		if ae != "" {
			req.Header.Set("Accept-Encoding", ae)
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := <-seen
		if ae == "" && len(got) != 0 || ae != "" && (len(got) != 1 || got[0] != ae) {
			t.Errorf("client sent Accept-Encoding %q; the upstream saw %q", ae, got)
		}
	}
}

// TestRefusalNeverFits: the 429 says a request can never fit only when
// its cost exceeds a limit that it is charged against; a per-request
// limit (a route's) charges 1, whatever the route costs.
func TestRefusalNeverFits(t *testing.T) {
	for _, tc := range []struct {
		perRequest bool
		want       bool
	}{{false, true}, {true, false}} {
		x := &exchange{cost: 5, subject: limiter.Subject{ID: "key:k1"}}
		x.decision = limiter.Decision{Statuses: []limiter.Status{{
			Limit:    limiter.Limit{Name: "confirm-10s", Limit: 2, Window: 10 * time.Second, PerRequest: tc.perRequest},
			Exceeded: true, RetryAfter: 10 * time.Second,
		}}}
		w := httptest.NewRecorder()
		(&Proxy{}).refuse(w, httptest.NewRequest("GET", "/confirm", nil), x)
		if got := strings.Contains(w.Body.String(), "can never fit"); got != tc.want {
			t.Errorf("per request %v, cost 5, limit 2: %s; want \"can never fit\" %v", tc.perRequest, w.Body, tc.want)
		}
	}
}

// TestOnlyWebSocketUpgrades: a WebSocket upgrade reaches the upstream;
// any other (h2c, say) goes as a plain request, so no tunnel opens in
// which requests would pass unidentified and unlimited.
func TestOnlyWebSocketUpgrades(t *testing.T) {
	seen := make(chan string, 1)
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("Upgrade")
		if r.Header.Get("Upgrade") != "" {
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", r.Header.Get("Upgrade"))
			w.WriteHeader(http.StatusSwitchingProtocols)
		}
	})
	srv := newTestProxy(t, up, &fakeDecider{decide: allowAll}, &Options{Logf: t.Logf})
	for _, tc := range []struct{ upgrade, want string }{{"websocket", "websocket"}, {"WebSocket", "WebSocket"}, {"h2c", ""}, {"tls/1.3", ""}} {
		req, _ := http.NewRequest("GET", srv.URL+"/x", nil)
		req.Header.Set("X-Api-Key", "secret-1")
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", tc.upgrade)
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := <-seen; got != tc.want {
			t.Errorf("Upgrade: %s reached the upstream as %q, want %q", tc.upgrade, got, tc.want)
		}
		if tc.want == "" && resp.StatusCode == http.StatusSwitchingProtocols {
			t.Errorf("Upgrade: %s switched protocols through the proxy", tc.upgrade)
		}
	}
}
