package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/config"
)

// upstream is the service behind the proxy in end-to-end tests. It
// remembers what reached it.
type upstream struct {
	*httptest.Server
	mu       sync.Mutex
	hits     map[string]int
	headers  map[string]http.Header // last request's headers, by path
	arrivals map[string][]time.Time // by X-Gaia-Subject
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{hits: map[string]int{}, headers: map[string]http.Header{}, arrivals: map[string][]time.Time{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		u.mu.Lock()
		u.hits[r.URL.Path]++
		u.headers[r.URL.Path] = r.Header.Clone()
		subject := r.Header.Get("X-Gaia-Subject")
		u.arrivals[subject] = append(u.arrivals[subject], now)
		u.mu.Unlock()
		if d, err := time.ParseDuration(r.URL.Query().Get("sleep")); err == nil {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, "hello from upstream")
	}))
	t.Cleanup(u.Close)
	return u
}

// arrived returns when the subject's requests reached the upstream.
func (u *upstream) arrived(subject string) []time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.arrivals[subject])
}

func (u *upstream) seen(path string) (int, http.Header) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits[path], u.headers[path]
}

// instance is a running gaia-proxy.
type instance struct {
	proxy, admin string
	cancel       context.CancelFunc
	done         chan error
	logs         *logBuffer
}

type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, format+"\n", args...)
}

// Write makes a logBuffer an io.Writer too (a command's output).
func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// loadFile loads file alone: no environment, no flags.
func loadFile(file string) config.LoadOptions { return config.LoadOptions{File: file} }

// start runs serve with the config file, as `gaia-proxy serve --config`
// would, and waits until both ports listen.
func start(t *testing.T, file string) *instance {
	t.Helper()
	return startWith(t, serveOptions{LoadOptions: loadFile(file)})
}

// startWith is start with serve options of the test's choosing.
func startWith(t *testing.T, so serveOptions) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{cancel: cancel, done: make(chan error, 1), logs: &logBuffer{}}
	ready := make(chan struct{})
	go func() {
		in.done <- serve(ctx, so, in.logs.logf, func(p, a string) {
			in.proxy, in.admin = "http://"+p, "http://"+a
			close(ready)
		})
	}()
	select {
	case <-ready:
	case err := <-in.done:
		t.Fatalf("serve ended before listening: %v\n%s", err, in.logs)
	case <-time.After(10 * time.Second):
		t.Fatalf("serve did not start\n%s", in.logs)
	}
	t.Cleanup(func() { in.stop(t) })
	return in
}

// stop shuts the instance down as SIGTERM does and checks it ends well.
func (in *instance) stop(t *testing.T) {
	t.Helper()
	if in.cancel == nil {
		return
	}
	in.cancel()
	in.cancel = nil
	select {
	case err := <-in.done:
		if err != nil {
			t.Errorf("serve: %v\n%s", err, in.logs)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("serve did not stop within 15s\n%s", in.logs)
	}
}

// call sends a request with headers ("Name: value" strings).
func call(t *testing.T, url string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
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

// noonZone returns a fixed-offset zone where it is about noon now, so
// that a test's daily quota never straddles midnight.
func noonZone() string {
	h := 12 - time.Now().UTC().Hour()
	switch {
	case h > 0:
		return fmt.Sprintf("Etc/GMT-%d", h)
	case h < 0:
		return fmt.Sprintf("Etc/GMT+%d", -h)
	}
	return "Etc/GMT"
}

// writeConfig writes the config text with {{UPSTREAM}}, {{DATA}} and
// {{ZONE}} filled in, and returns its path.
func writeConfig(t *testing.T, path, text, upstream, data string) string {
	t.Helper()
	r := strings.NewReplacer("{{UPSTREAM}}", upstream, "{{DATA}}", data, "{{ZONE}}", noonZone())
	if err := os.WriteFile(path, []byte(r.Replace(text)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const e2eConfig = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
upstream_timeout: 300ms
admin: {listen: 127.0.0.1:0}
data_dir: {{DATA}}
quota: {timezone: {{ZONE}}, flush_interval: 100ms}
defaults: {plan: free}
plans:
  anonymous: {rate: [{limit: 2, window: 1h}]}
  free: {rate: [{limit: 3, window: 1h}]}
  metered:
    rate: [{limit: 1000, window: 1h}]
    quota: [{limit: 6, period: daily}]
  watched: {rate: [{limit: 1, window: 1h, shadow: true}]}
users:
  alice: {plan: free}
keys:
  - {id: k-free, key: key-free, user: alice}
  - {id: k-free2, key: key-free2, plan: free}
  - {id: k-metered, key: key-metered, plan: metered}
  - {id: k-watched, key: key-watched, plan: watched}
routes:
  - {name: health, path: /health, exempt: true}
  - {name: search, path: /search/*, rate: [{limit: 2, window: 1h, scope: global}]}
  - {name: heavy, path: /heavy, cost: 2}
`

type errorJSON struct {
	Error      string `json:"error"`
	Message    string `json:"message"`
	Subject    string `json:"subject"`
	RetryAfter int64  `json:"retry_after_seconds"`
	Limit      struct {
		Name   string `json:"name"`
		Limit  int64  `json:"limit"`
		Window string `json:"window"`
		Period string `json:"period"`
	} `json:"limit"`
}

func decodeError(t *testing.T, body string) errorJSON {
	t.Helper()
	var e errorJSON
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return e
}

// TestEndToEnd runs the real server in front of an upstream, on the
// embedded default, and walks through SPEC §4.
func TestEndToEnd(t *testing.T) {
	up := newUpstream(t)
	dir := t.TempDir()
	file := writeConfig(t, filepath.Join(dir, "gaia.yaml"), e2eConfig, up.URL, filepath.Join(dir, "data"))
	in := start(t, file)

	t.Run("admitted requests are forwarded with identity and rate-limit headers", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			resp, body := call(t, in.proxy+"/a", "X-API-Key: key-free", "X-Gaia-Subject: key:root", "X-Gaia-Plan: enterprise")
			if resp.StatusCode != 200 || body != "hello from upstream" {
				t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
			}
			if got, want := resp.Header.Get("X-Ratelimit-Remaining"), fmt.Sprint(3-i); got != want {
				t.Errorf("request %d: X-RateLimit-Remaining = %q, want %q", i, got, want)
			}
			if got := resp.Header.Get("Ratelimit-Policy"); got != `"free-1h";q=3;w=3600` {
				t.Errorf("RateLimit-Policy = %q", got)
			}
		}
		_, h := up.seen("/a")
		for k, want := range map[string]string{"X-Gaia-Subject": "key:k-free", "X-Gaia-User": "alice", "X-Gaia-Key-Id": "k-free", "X-Gaia-Plan": "free"} {
			if got := h.Get(k); got != want {
				t.Errorf("upstream saw %s = %q, want %q (spoofed values must be replaced)", k, got, want)
			}
		}
	})

	t.Run("a hit limit answers 429 and never forwards", func(t *testing.T) {
		before, _ := up.seen("/a")
		resp, body := call(t, in.proxy+"/a", "X-API-Key: key-free")
		e := decodeError(t, body)
		if resp.StatusCode != 429 || e.Error != "rate_limited" || e.Subject != "key:k-free" || e.Limit.Name != "free-1h" || e.Limit.Window != "1h" || e.Limit.Limit != 3 {
			t.Errorf("got %d %+v", resp.StatusCode, e)
		}
		if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" || fmt.Sprint(e.RetryAfter) != ra {
			t.Errorf("Retry-After = %q, body retry_after_seconds = %d", ra, e.RetryAfter)
		}
		if resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("Cache-Control = %q", resp.Header.Get("Cache-Control"))
		}
		if after, _ := up.seen("/a"); after != before {
			t.Errorf("the refused request reached the upstream")
		}
	})

	t.Run("unknown key is 401 and never forwarded", func(t *testing.T) {
		resp, body := call(t, in.proxy+"/b", "X-API-Key: who-knows")
		if e := decodeError(t, body); resp.StatusCode != 401 || e.Error != "invalid_api_key" {
			t.Errorf("got %d %+v", resp.StatusCode, e)
		}
		if n, _ := up.seen("/b"); n != 0 {
			t.Errorf("upstream saw %d requests with an unknown key", n)
		}
	})

	t.Run("exempt routes are untouched", func(t *testing.T) {
		// key-free is out of budget, yet its health checks pass, uncounted.
		for range 5 {
			resp, _ := call(t, in.proxy+"/health", "X-API-Key: key-free")
			if resp.StatusCode != 200 || resp.Header.Get("Ratelimit-Policy") != "" || resp.Header.Get("X-Ratelimit-Limit") != "" {
				t.Fatalf("exempt: %d, headers %v", resp.StatusCode, resp.Header)
			}
		}
	})

	t.Run("route cost is charged", func(t *testing.T) {
		resp, _ := call(t, in.proxy+"/heavy", "X-API-Key: key-metered")
		if resp.StatusCode != 200 || resp.Header.Get("X-Quota-Remaining") != "4" {
			t.Errorf("heavy: %d, X-Quota-Remaining %q, want 200 and 4 (6 - cost 2)", resp.StatusCode, resp.Header.Get("X-Quota-Remaining"))
		}
	})

	t.Run("global scope is shared by all callers", func(t *testing.T) {
		if resp, _ := call(t, in.proxy+"/search/x", "X-API-Key: key-free2"); resp.StatusCode != 200 {
			t.Fatalf("first search: %d", resp.StatusCode)
		}
		if resp, _ := call(t, in.proxy+"/search/y", "X-API-Key: key-metered"); resp.StatusCode != 200 {
			t.Fatalf("second search: %d", resp.StatusCode)
		}
		resp, body := call(t, in.proxy+"/search/z", "X-API-Key: key-free2")
		if e := decodeError(t, body); resp.StatusCode != 429 || e.Limit.Name != "search-1h" {
			t.Errorf("third search: %d %+v, want 429 on search-1h", resp.StatusCode, e)
		}
	})

	t.Run("shadow limits refuse nothing and say so", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			resp, _ := call(t, in.proxy+"/watched", "X-API-Key: key-watched")
			want := ""
			if i > 1 {
				want = "watched-1h"
			}
			_, h := up.seen("/watched")
			if resp.StatusCode != 200 || resp.Header.Get("X-Gaia-Shadow-Limited") != want || h.Get("X-Gaia-Shadow-Limited") != want {
				t.Errorf("request %d: %d, response %q, upstream %q, want 200 and %q", i, resp.StatusCode,
					resp.Header.Get("X-Gaia-Shadow-Limited"), h.Get("X-Gaia-Shadow-Limited"), want)
			}
		}
	})

	t.Run("an exhausted quota answers quota_exceeded", func(t *testing.T) {
		// Used so far: 2 (heavy) + 1 (search) of 6.
		for i := 0; i < 3; i++ {
			if resp, _ := call(t, in.proxy+"/m", "X-API-Key: key-metered"); resp.StatusCode != 200 {
				t.Fatalf("request %d: %d", i, resp.StatusCode)
			}
		}
		resp, body := call(t, in.proxy+"/m", "X-API-Key: key-metered")
		if e := decodeError(t, body); resp.StatusCode != 429 || e.Error != "quota_exceeded" || e.Limit.Period != "daily" || e.Limit.Name != "metered-daily" {
			t.Errorf("got %d %+v", resp.StatusCode, e)
		}
		if resp.Header.Get("X-Quota-Remaining") != "0" {
			t.Errorf("X-Quota-Remaining = %q, want 0", resp.Header.Get("X-Quota-Remaining"))
		}
	})

	t.Run("anonymous callers are limited by IP", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			resp, _ := call(t, in.proxy+"/anon")
			if want := map[bool]int{true: 200, false: 429}[i <= 2]; resp.StatusCode != want {
				t.Errorf("anonymous request %d: %d, want %d", i, resp.StatusCode, want)
			}
		}
		_, h := up.seen("/anon")
		if got := h.Get("X-Gaia-Subject"); got != "ip:127.0.0.1" {
			t.Errorf("subject %q, want ip:127.0.0.1", got)
		}
	})

	t.Run("quota usage survives a restart", func(t *testing.T) {
		in.stop(t)
		in2 := start(t, file)
		resp, body := call(t, in2.proxy+"/m", "X-API-Key: key-metered")
		if e := decodeError(t, body); resp.StatusCode != 429 || e.Error != "quota_exceeded" {
			t.Errorf("after restart: %d %+v, want the quota still exhausted", resp.StatusCode, e)
		}
		if resp, _ := call(t, in2.proxy+"/a", "X-API-Key: key-free2"); resp.StatusCode != 200 || resp.Header.Get("X-Quota-Limit") != "" {
			t.Errorf("after restart: key-free2 %d", resp.StatusCode)
		}
	})
}

func TestUpstreamFailures(t *testing.T) {
	up := newUpstream(t)
	dir := t.TempDir()
	in := start(t, writeConfig(t, filepath.Join(dir, "gaia.yaml"), e2eConfig, up.URL, dir))
	resp, body := call(t, in.proxy+"/slow?sleep=3s", "X-API-Key: key-metered")
	if e := decodeError(t, body); resp.StatusCode != 504 || e.Error != "upstream_timeout" {
		t.Errorf("slow upstream: %d %+v", resp.StatusCode, e)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	ln.Close()
	dir2 := t.TempDir()
	dead := start(t, writeConfig(t, filepath.Join(dir2, "gaia.yaml"), e2eConfig, "http://"+deadAddr, dir2))
	resp, body = call(t, dead.proxy+"/x", "X-API-Key: key-metered")
	if e := decodeError(t, body); resp.StatusCode != 502 || e.Error != "upstream_unavailable" {
		t.Errorf("dead upstream: %d %+v", resp.StatusCode, e)
	}
	resp, body = call(t, dead.admin+"/health")
	if resp.StatusCode != 200 || !strings.Contains(body, `"status":"degraded"`) {
		t.Errorf("health with a dead upstream: %d %s", resp.StatusCode, body)
	}
}

// TestGracefulShutdown checks that stopping drains a request in flight.
func TestGracefulShutdown(t *testing.T) {
	up := newUpstream(t)
	dir := t.TempDir()
	in := start(t, writeConfig(t, filepath.Join(dir, "gaia.yaml"), strings.Replace(e2eConfig, "upstream_timeout: 300ms", "upstream_timeout: 5s", 1), up.URL, dir))
	got := make(chan int, 1)
	go func() {
		resp, err := http.Get(in.proxy + "/drain?sleep=700ms")
		if err != nil {
			got <- 0
			return
		}
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	for n := 0; n == 0; n, _ = up.seen("/drain") {
		time.Sleep(10 * time.Millisecond)
	}
	in.stop(t)
	if code := <-got; code != 200 {
		t.Errorf("in-flight request during shutdown: %d, want 200", code)
	}
}

const reloadConfig = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
admin: {listen: 127.0.0.1:0}
data_dir: {{DATA}}
defaults: {plan: free}
plans:
  anonymous: {rate: [{limit: 100, window: 1h}]}
  free: {rate: [{limit: LIMIT, window: 1h}]}
keys:
  - {id: k, key: key-k}
`

// eventually polls f every 50ms for up to 2s (SPEC: a reload is in force
// within 2 s).
func eventually(t *testing.T, what string, f func() bool, logs *logBuffer) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 2s; log:\n%s", what, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestHotReload(t *testing.T) {
	up := newUpstream(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "gaia.yaml")
	write := func(limit string) {
		writeConfig(t, file, strings.Replace(reloadConfig, "LIMIT", limit, 1), up.URL, dir)
	}
	write("2")
	in := start(t, file)
	status := func() int {
		resp, _ := call(t, in.proxy+"/r", "X-API-Key: key-k")
		return resp.StatusCode
	}
	for i := 0; i < 2; i++ {
		if s := status(); s != 200 {
			t.Fatalf("request %d: %d", i, s)
		}
	}
	if s := status(); s != 429 {
		t.Fatalf("third request: %d, want 429", s)
	}

	// Raise the limit: it applies to the usage already counted.
	write("4")
	eventually(t, "the raised limit", func() bool { return status() == 200 }, in.logs)
	if s := status(); s != 200 {
		t.Errorf("fourth request: %d, want 200", s)
	}
	if s := status(); s != 429 {
		t.Errorf("fifth request: %d, want 429 (usage kept across the reload)", s)
	}

	// An invalid edit is refused, the old config keeps serving, health says so.
	if err := os.WriteFile(file, []byte("plans: {free: {rate: [{limit: 10, windw: 1h}]}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the refusal on /health", func() bool {
		_, body := call(t, in.admin+"/health")
		return strings.Contains(body, "windw")
	}, in.logs)
	if s := status(); s != 429 {
		t.Errorf("after an invalid edit: %d, want 429 from the old limits", s)
	}
	if !strings.Contains(in.logs.String(), "plans.free.rate[0].windw: unknown key") {
		t.Errorf("the refusal was not logged with the key:\n%s", in.logs)
	}

	// A valid edit clears the refusal.
	write("4")
	eventually(t, "recovery", func() bool {
		_, body := call(t, in.admin+"/health")
		return strings.Contains(body, `"config":{"status":"ok"}`)
	}, in.logs)
}

// TestSIGHUPReload reloads a file the watcher cannot see change: the
// target of a symlink in another directory, edited in place.
func TestSIGHUPReload(t *testing.T) {
	up := newUpstream(t)
	dir, other := t.TempDir(), t.TempDir()
	target := filepath.Join(other, "real.yaml")
	writeConfig(t, target, strings.Replace(reloadConfig, "LIMIT", "1", 1), up.URL, dir)
	link := filepath.Join(dir, "gaia.yaml")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	in := start(t, link)
	call(t, in.proxy+"/r", "X-API-Key: key-k")
	if resp, _ := call(t, in.proxy+"/r", "X-API-Key: key-k"); resp.StatusCode != 429 {
		t.Fatalf("second request: %d, want 429", resp.StatusCode)
	}
	writeConfig(t, target, strings.Replace(reloadConfig, "LIMIT", "3", 1), up.URL, dir)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the SIGHUP reload", func() bool {
		resp, _ := call(t, in.proxy+"/r", "X-API-Key: key-k")
		return resp.StatusCode == 200
	}, in.logs)
	if !strings.Contains(in.logs.String(), "reloaded (SIGHUP)") {
		t.Errorf("log does not show the SIGHUP reload:\n%s", in.logs)
	}
}
