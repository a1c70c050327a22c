package main

import (
	"context"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
)

// TestSIGTERMWithinBudget: SIGTERM ends gaia-proxy with status 0 within
// 10 s (SPEC §4) in the worst case there is: a request in flight longer
// than the drain, a client on the live stream, and a ledger that hangs
// (PostgreSQL behind a frozen relay) with usage still to write. The
// drain, the live stream's close and the last flush share the 10 s; the
// flush fails, which the log says, loudly, and the exit status does not.
func TestSIGTERMWithinBudget(t *testing.T) {
	redisURL := testenv.RedisURL(t)
	dbURL := testenv.Schema(t)
	rl, relayed := postgresRelay(t, dbURL)
	up := newUpstream(t)
	dir := t.TempDir()
	// The in-flight request must outlast the drain without timing out.
	text := strings.NewReplacer("LISTEN", "127.0.0.1:0", "REDISURL", redisURL, "PREFIX", testenv.Prefix(t),
		"DBURL", relayed, "FLUSH", "100ms", "QUOTA", "1000000",
		"upstream_timeout: 10s", "upstream_timeout: 60s").Replace(durableConfig)
	file := writeConfig(t, filepath.Join(dir, "gaia.yaml"), text, up.URL, dir)
	var out strings.Builder
	if err := run(context.Background(), []string{"migrate", "--config", file}, nil, &out, &out); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	p := spawn(t, "serve", "--config", file)
	m := regexp.MustCompile(`proxy on (\S+) -> .*, admin on ([^,]+),`).FindStringSubmatch(p.logs.String())
	if m == nil {
		t.Fatalf("no addresses in the log:\n%s", p.logs)
	}
	proxyURL, adminAddr := "http://"+m[1], m[2]

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+adminAddr+"/ws/admin/quotas", nil)
	if err != nil {
		t.Fatalf("live stream: %v\n%s", err, p.logs)
	}
	defer ws.CloseNow()
	wsDone := make(chan error, 1)
	go func() {
		for {
			if _, _, err := ws.Read(ctx); err != nil {
				wsDone <- err
				return
			}
		}
	}()

	// One request before the ledger hangs (a first use reads the ledger),
	// more after: usage the last flush cannot write.
	for i := range 5 {
		if i == 1 {
			rl.Freeze()
		}
		if resp, body := call(t, proxyURL+"/r", "X-API-Key: key-k"); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	inFlight := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", proxyURL+"/drain?sleep=25s", nil)
		req.Header.Set("X-API-Key", "key-k")
		tr := &http.Transport{} // a connection of its own, which the drain's end cuts
		defer tr.CloseIdleConnections()
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		inFlight <- err
	}()
	waitFor(t, 10*time.Second, "the long request at the upstream", func() bool { n, _ := up.seen("/drain"); return n > 0 }, p.logs)

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	select {
	case err := <-p.done:
		took := time.Since(sent)
		t.Logf("exited %v after SIGTERM: %v", took.Round(time.Millisecond), err)
		// SPEC: within 10 s; the margin is for the machine, not the design.
		if err != nil || took >= 10*time.Second+500*time.Millisecond {
			t.Errorf("SIGTERM: exit %v after %v, want exit status 0 within 10 s\n%s", err, took.Round(time.Millisecond), p.logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit 30 s after SIGTERM\n%s", p.logs)
	}
	logs := p.logs.String()
	for _, want := range []string{"draining in-flight requests (up to 8s)", "QUOTA USAGE NOT WRITTEN to the ledger", "Redis still holds them"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q:\n%s", want, logs)
		}
	}
	select {
	case err := <-wsDone:
		if websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Logf("live stream ended with %v (going away expected, but the exit may come first)", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the live stream is still open after the exit")
	}
	if err := <-inFlight; err == nil {
		t.Error("the request still in flight after the drain got an answer; want it cut")
	} else {
		t.Logf("request in flight past the drain: %v", err)
	}
}

// TestSIGTERMFlushesCutRequests: what a request cut at the drain's end
// records still makes the last flush. The request is a POST whose
// body nobody has read yet, stuck in its decision: its quota counter is
// new, and the ledger it is seeded from hangs. Closing its connection
// does not reach such a handler; the shutdown must cancel what it waits
// on, so that it charges its quota (seeded from nothing), and wait for
// it before flushing. The ledger answers again only well after the cut,
// so the charge owes nothing to its own read getting through.
func TestSIGTERMFlushesCutRequests(t *testing.T) {
	// The in-process hot path, the ledger behind the relay; a drain much
	// shorter than the limiter's wait for the ledger (1 s).
	file, _, rl, dbURL := inProcessBehindRelay(t, 1000000, "shutdown_timeout: 300ms\n")
	var out strings.Builder
	if err := run(context.Background(), []string{"migrate", "--config", file}, nil, &out, &out); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	cut := make(chan struct{}, 1)
	p := spawnWith(t, nil, func(_ *process, line string) {
		if strings.Contains(line, "cutting the requests still in flight") {
			select {
			case cut <- struct{}{}:
			default:
			}
		}
	}, "serve", "--config", file)
	m := regexp.MustCompile(`proxy on (\S+) -> .*, limiter in-process, ledger postgres`).FindStringSubmatch(p.logs.String())
	if m == nil {
		t.Fatalf("no proxy address, or not the in-process limiter on PostgreSQL, in the log:\n%s", p.logs)
	}

	rl.Freeze()
	go func() {
		req, _ := http.NewRequest("POST", "http://"+m[1]+"/drain?sleep=3s", strings.NewReader("a body nobody reads yet"))
		req.Header.Set("X-API-Key", "key-k")
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
		}
	}()
	// A margin for the request to reach its decision (milliseconds),
	// well within the limiter's wait for the ledger.
	time.Sleep(200 * time.Millisecond)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	select {
	case <-cut:
	case <-time.After(5 * time.Second):
		t.Fatalf("the drain did not cut the request\n%s", p.logs)
	}
	time.Sleep(500 * time.Millisecond)
	rl.Restore()
	select {
	case err := <-p.done:
		took := time.Since(sent)
		if err != nil || took >= 10*time.Second+500*time.Millisecond {
			t.Errorf("SIGTERM: exit %v after %v, want exit status 0 within 10 s\n%s", err, took.Round(time.Millisecond), p.logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit 30 s after SIGTERM\n%s", p.logs)
	}
	if got := ledgerUsed(t, dbURL); got != 1 {
		t.Errorf("ledger: key k used %d after the exit, want 1 (the cut request's charge)\n%s", got, p.logs)
	}
	if logs := p.logs.String(); strings.Contains(logs, "still running after being cut") || !strings.Contains(logs, "shutdown complete: quota usage flushed") {
		t.Errorf("the last flush did not find every handler returned, or failed:\n%s", logs)
	}
}
