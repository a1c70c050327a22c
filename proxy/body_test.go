package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// bodyTimeout is the UpstreamTimeout of the body tests: the time a client
// gets to start sending its body.
const bodyTimeout = 200 * time.Millisecond

// hangGuard bounds every wait of the body tests: a hang, not a timing.
const hangGuard = 30 * time.Second

// rawConn dials srv for a test that writes the bytes on the wire itself.
// Reads and writes on it fail after hangGuard.
func rawConn(t *testing.T, srv *httptest.Server) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() }) // before the servers close: they wait for their handlers
	c.SetDeadline(time.Now().Add(hangGuard))
	return c, bufio.NewReader(c)
}

// readResponse reads one response, and all its body, from br.
func readResponse(br *bufio.Reader) (*http.Response, string, error) {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// readAllBody is an upstream that reads the whole request body, sends
// how it ended to ended, and answers with the number of bytes it got.
func readAllBody(ended chan<- error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if ended != nil {
			ended <- err
		}
		if err != nil {
			return
		}
		fmt.Fprint(w, n)
	}
}

// statusHook is an Options.Upstream that keeps the statuses it is shown.
type statusHook struct {
	mu       sync.Mutex
	statuses []int
}

func (h *statusHook) record(route string, status int, took time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.statuses = append(h.statuses, status)
}

func (h *statusHook) seen() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.statuses)
}

// wantBodyTimeout checks that a response is the proxy's 408.
func wantBodyTimeout(t *testing.T, resp *http.Response, body string) {
	t.Helper()
	const want = `{"error":"request_timeout","message":"the request body did not arrive in time"}` + "\n"
	if resp.StatusCode != http.StatusRequestTimeout || body != want {
		t.Errorf("got %d %q, want 408 %q", resp.StatusCode, body, want)
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type = %q", resp.Header.Get("Content-Type"))
	}
}

// wantClosed checks that the proxy closed the connection.
func wantClosed(t *testing.T, br *bufio.Reader) {
	t.Helper()
	if b, err := br.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the connection is still open after a request body timed out (read %q, %v)", b, err)
	}
}

// TestStalledBodyTimesOut: a client that sends part of its body and then
// nothing gets 408 once its time is up, and the upstream's read of the
// body fails rather than waiting for ever. The upstream gave no answer,
// so its count-success quota is refunded (cost 1), the Upstream hook,
// which times the upstream, is not told, and BodyTimedOut is.
func TestStalledBodyTimesOut(t *testing.T) {
	for _, tc := range []struct{ name, framing, sent string }{
		{"content-length", "Content-Length: 1000\r\n", "0123456789"},
		{"chunked", "Transfer-Encoding: chunked\r\n", "a\r\n0123456789\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ended := make(chan error, 1)
			var hook statusHook
			var timedOut atomic.Int64
			d := &fakeDecider{decide: allowAll}
			srv := newTestProxy(t, readAllBody(ended), d, &Options{UpstreamTimeout: bodyTimeout, Upstream: hook.record,
				BodyTimedOut: func(string) { timedOut.Add(1) }, Logf: t.Logf})
			c, br := rawConn(t, srv)
			io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: gaia\r\nX-Api-Key: secret-1\r\n"+tc.framing+"\r\n"+tc.sent)

			resp, body, err := readResponse(br)
			if err != nil {
				t.Fatalf("stalled body: %v, want a 408", err)
			}
			wantBodyTimeout(t, resp, body)
			if resp.Header.Get("Ratelimit-Policy") == "" {
				t.Error("the 408 lacks the rate-limit headers")
			}
			wantClosed(t, br)
			select {
			case err := <-ended:
				if err == nil {
					t.Error("the upstream read the whole of a body that never came")
				}
			case <-time.After(hangGuard):
				t.Fatal("the upstream is still reading the stalled body")
			}
			if statuses := hook.seen(); len(statuses) != 0 {
				t.Errorf("the Upstream hook saw %v, want nothing", statuses)
			}
			if n := timedOut.Load(); n != 1 {
				t.Errorf("BodyTimedOut was told %d times, want once", n)
			}
			if n := d.refunds.Load(); n != 1 {
				t.Errorf("refunded %d units after a body timeout, want 1", n)
			}
		})
	}
}

// trickle writes chunk on c every interval, count times or until stop
// closes or a write fails, and closes done when it ends.
func trickle(c net.Conn, chunk []byte, interval time.Duration, count int, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for range count {
		if _, err := c.Write(chunk); err != nil {
			return
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// wantBodyRefused checks the end of a body sent below the minimum rate:
// a 408, or a closed connection (the proxy may close it while the client
// still writes, and the reset may overtake the 408).
func wantBodyRefused(t *testing.T, resp *http.Response, body string, err error) {
	t.Helper()
	switch {
	case err == nil:
		wantBodyTimeout(t, resp, body)
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Errorf("a body far below the minimum rate was still being read after %v", hangGuard)
	default:
		t.Logf("connection closed: %v", err)
	}
}

// TestSlowBodyRefused: bodies that do not arrive at minBodyRate get a
// 408 (or a closed connection) soon, well before hangGuard:
//   - a trickle: a byte every 100 ms, 10 bytes/s, a fiftieth of the rate;
//   - a stall after credit: 20,000 bytes at once (40 s at minBodyRate,
//     more than hangGuard), then nothing: no Read waits much longer
//     than the timeout;
//   - a trickle after a fast start: the same 20,000 bytes, then a byte
//     every 100 ms: the credit is spent within a span of the timeout,
//     though no Read waits as long as the timeout.
func TestSlowBodyRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		head    int  // bytes sent at once
		trickle bool // then a byte every 100 ms
	}{
		{"trickle", 0, true},
		{"stall after credit", 20000, false},
		{"trickle after a fast start", 20000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newTestProxy(t, readAllBody(nil), &fakeDecider{decide: allowAll}, &Options{UpstreamTimeout: bodyTimeout, Logf: t.Logf})
			c, br := rawConn(t, srv)
			io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: gaia\r\nContent-Length: 100000\r\n\r\n")
			c.Write(make([]byte, tc.head))
			stop, done := make(chan struct{}), make(chan struct{})
			if tc.trickle {
				go trickle(c, []byte("x"), 100*time.Millisecond, 100000, stop, done)
			} else {
				close(done)
			}
			resp, body, err := readResponse(br)
			close(stop)
			<-done
			wantBodyRefused(t, resp, body, err)
		})
	}
}

// TestBodyRate: a body that arrives in pieces over longer than the
// initial timeout passes when it comes well above minBodyRate (each byte
// buys time), and fails when it comes below it, in pieces as often.
func TestBodyRate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		chunk int // bytes sent every 100 ms
		count int
		pass  bool
	}{
		// 20 KB/s, 40 times the minimum: each chunk buys 4 s, and the
		// next comes 0.1 s later.
		{"above the minimum", 2048, 10, true},
		// 50 bytes/s, a tenth of the minimum: each chunk buys 10 ms of
		// the 100 ms until the next; the whole body would take 2 s.
		{"below the minimum", 5, 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newTestProxy(t, readAllBody(nil), &fakeDecider{decide: allowAll}, &Options{UpstreamTimeout: bodyTimeout, Logf: t.Logf})
			c, br := rawConn(t, srv)
			size := tc.chunk * tc.count
			fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: gaia\r\nContent-Length: %d\r\n\r\n", size)
			stop, done := make(chan struct{}), make(chan struct{})
			go trickle(c, make([]byte, tc.chunk), 100*time.Millisecond, tc.count, stop, done)
			resp, body, err := readResponse(br)
			close(stop)
			<-done
			if !tc.pass {
				wantBodyRefused(t, resp, body, err)
				return
			}
			if err != nil {
				t.Fatalf("a body at 40 times the minimum rate: %v", err)
			}
			if resp.StatusCode != http.StatusOK || body != fmt.Sprint(size) {
				t.Errorf("got %d %q, want 200 and the upstream to have read %d bytes", resp.StatusCode, body, size)
			}
		})
	}
}

// TestBodyKeepAlive: the body's deadline ends with the body. A response
// that comes after it would have passed is not cut off; requests that
// follow on the same connection, after a pause longer than the initial
// timeout, pass; and a later body there is bounded afresh.
func TestBodyKeepAlive(t *testing.T) {
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			return
		}
		if r.URL.Path == "/late" {
			// Headers now (the response header timeout is bodyTimeout
			// too), the rest after the body's deadline has passed.
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			select {
			case <-time.After(3 * bodyTimeout):
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprint(w, n)
	})
	srv := newTestProxy(t, up, &fakeDecider{decide: allowAll}, &Options{UpstreamTimeout: bodyTimeout, Logf: t.Logf})
	c, br := rawConn(t, srv)
	for i, step := range []struct {
		pause   time.Duration
		request string
		want    string
	}{
		{0, "POST /late HTTP/1.1\r\nHost: gaia\r\nContent-Length: 5\r\n\r\nhello", "5"},
		{3 * bodyTimeout, "GET /x HTTP/1.1\r\nHost: gaia\r\n\r\n", "0"},
		{3 * bodyTimeout, "POST /x HTTP/1.1\r\nHost: gaia\r\nContent-Length: 5\r\n\r\nhello", "5"},
	} {
		time.Sleep(step.pause)
		if _, err := io.WriteString(c, step.request); err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		resp, body, err := readResponse(br)
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		if resp.StatusCode != http.StatusOK || body != step.want || resp.Close {
			t.Fatalf("request %d: %d %q (close %v), want 200 %q on a kept connection", i+1, resp.StatusCode, body, resp.Close, step.want)
		}
	}
	io.WriteString(c, "POST /x HTTP/1.1\r\nHost: gaia\r\nContent-Length: 1000\r\n\r\n0123456789")
	resp, body, err := readResponse(br)
	if err != nil {
		t.Fatalf("stalled body on a kept connection: %v, want a 408", err)
	}
	wantBodyTimeout(t, resp, body)
}

// TestRefusedStalledBody: a refused request is answered even when its
// client stalls the body. The server reads what is left of a small
// unread body before it answers (to keep the connection), and without a
// deadline it would wait for that body for ever.
func TestRefusedStalledBody(t *testing.T) {
	d := &fakeDecider{decide: func(limits []limiter.Limit, cost int64) (limiter.Decision, error) {
		d, _ := allowAll(limits, cost)
		d.Allowed = false
		d.Statuses[0].Exceeded, d.Statuses[0].RetryAfter = true, time.Second
		return d, nil
	}}
	srv := newTestProxy(t, readAllBody(nil), d, &Options{UpstreamTimeout: bodyTimeout, Logf: t.Logf})
	c, br := rawConn(t, srv)
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: gaia\r\nX-Api-Key: secret-1\r\nContent-Length: 1000\r\n\r\n0123456789")
	resp, body, err := readResponse(br)
	if err != nil {
		t.Fatalf("refused request with a stalled body: %v, want a 429", err)
	}
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, `"rate_limited"`) {
		t.Errorf("got %d %q, want 429 rate_limited", resp.StatusCode, body)
	}
	wantClosed(t, br)
}

// TestBodyHangUpIsNotTimeout: a client that hangs up in the middle of its
// body is a caller who left (499, nothing for the Upstream hook), not a
// body that came too slowly.
func TestBodyHangUpIsNotTimeout(t *testing.T) {
	var hook statusHook
	up := httptest.NewServer(readAllBody(nil))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	d := &fakeDecider{decide: allowAll}
	p := New(u, d, &Settings{Policy: testPolicy(t), Identity: *testIdentity()}, &Options{UpstreamTimeout: hangGuard, Upstream: hook.record, Logf: t.Logf})
	handled := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(handled)
		p.ServeHTTP(w, r)
	}))
	defer srv.Close()
	c, _ := rawConn(t, srv)
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: gaia\r\nX-Api-Key: secret-1\r\nContent-Length: 1000\r\n\r\n0123456789")
	time.Sleep(bodyTimeout) // let the proxy start on the body; it has hangGuard to wait for the rest
	c.Close()
	select {
	case <-handled:
	case <-time.After(hangGuard):
		t.Fatal("the proxy still waits for the body of a client that hung up")
	}
	statuses := hook.seen()
	for _, s := range statuses {
		if s == http.StatusRequestTimeout {
			t.Errorf("the Upstream hook saw %v: a hang-up taken for a body timeout", statuses)
		}
	}
	if n := d.refunds.Load(); n != 0 {
		t.Errorf("refunded %d units to a caller that hung up, want 0", n)
	}
}

// TestMalformedBody: a chunked body whose framing is broken is the
// client's fault, not the upstream's: 400 invalid_request, naming what
// was wrong, with the rate-limit headers, on a connection then closed.
// The upstream got nothing or a request cut short, never a whole body,
// and gave no answer: the Upstream hook (the upstream's 5xx) is not
// told, nor is BodyTimedOut, and the count-success quota is refunded
// (cost 1), as after a body timeout.
func TestMalformedBody(t *testing.T) {
	for _, tc := range []struct{ name, sent, reason string }{
		{"bad hex", "zz\r\n", "invalid byte in chunk length"},
		{"too large", "ffffffffffffffffffff\r\n", "http chunk length too large"},
		{"no CRLF after data", "5\r\nhelloXX\r\n", "malformed chunked encoding"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ended := make(chan error, 1)
			up := httptest.NewServer(readAllBody(ended))
			defer up.Close()
			u, _ := url.Parse(up.URL)
			var hook statusHook
			var timedOut atomic.Int64
			d := &fakeDecider{decide: allowAll}
			p := New(u, d, &Settings{Policy: testPolicy(t), Identity: *testIdentity()}, &Options{UpstreamTimeout: hangGuard,
				Upstream: hook.record, BodyTimedOut: func(string) { timedOut.Add(1) }, Logf: t.Logf})
			srv := httptest.NewServer(p)
			defer srv.Close()
			c, br := rawConn(t, srv)
			io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: gaia\r\nX-Api-Key: secret-1\r\nTransfer-Encoding: chunked\r\n\r\n"+
				"a\r\n0123456789\r\n"+tc.sent)

			resp, body, err := readResponse(br)
			if err != nil {
				t.Fatalf("malformed body: %v, want a 400", err)
			}
			want := `{"error":"invalid_request","message":"the request body could not be read: ` + tc.reason + `"}` + "\n"
			if resp.StatusCode != http.StatusBadRequest || body != want {
				t.Errorf("got %d %q, want 400 %q", resp.StatusCode, body, want)
			}
			if resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type = %q", resp.Header.Get("Content-Type"))
			}
			if resp.Header.Get("Ratelimit-Policy") == "" {
				t.Error("the 400 lacks the rate-limit headers")
			}
			wantClosed(t, br)
			up.Close() // waits for the upstream's handler, if the request reached it
			select {
			case err := <-ended:
				if err == nil {
					t.Error("the upstream read a whole body out of a malformed one")
				}
			default: // the request never reached it
			}
			if statuses := hook.seen(); len(statuses) != 0 {
				t.Errorf("the Upstream hook saw %v, want nothing", statuses)
			}
			if n := timedOut.Load(); n != 0 {
				t.Errorf("BodyTimedOut was told %d times, want never", n)
			}
			if n := d.refunds.Load(); n != 1 {
				t.Errorf("refunded %d units after a malformed body, want 1", n)
			}
		})
	}
}

// TestBoundBodyOnlyWithBody: only a request with a body gets the bounded
// wrapper; one without keeps http.NoBody and pays nothing, and so does one
// whose ResponseWriter cannot set read deadlines.
func TestBoundBodyOnlyWithBody(t *testing.T) {
	u, _ := url.Parse("http://upstream.invalid")
	p := New(u, &fakeDecider{decide: allowAll}, &Settings{Policy: testPolicy(t), Identity: *testIdentity()}, &Options{UpstreamTimeout: bodyTimeout, Logf: t.Logf})
	bodies := make(chan io.ReadCloser, 1)
	p.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		bodies <- r.Body
	})
	srv := httptest.NewServer(p)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()
	for _, tc := range []struct {
		method, body string
		bounded      bool
	}{
		{"GET", "", false},
		{"POST", "", false}, // Content-Length: 0
		{"POST", "hello", true},
		{"PUT", "hello", true},
	} {
		req, _ := http.NewRequestWithContext(ctx, tc.method, srv.URL+"/x", strings.NewReader(tc.body))
		if tc.body == "" {
			req.Body = nil
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := <-bodies
		if _, ok := got.(*boundedBody); ok != tc.bounded || !tc.bounded && got != http.NoBody {
			t.Errorf("%s with body %q: the handler got a %T, want bounded %v", tc.method, tc.body, got, tc.bounded)
		}
	}

	// A recorder has no connection to set deadlines on: the body passes as it is.
	r := httptest.NewRequest("POST", "/x", strings.NewReader("hello"))
	sent := r.Body
	p.ServeHTTP(httptest.NewRecorder(), r)
	if got := <-bodies; got != sent {
		t.Errorf("with a recorder the handler got a %T, want the request's own body", got)
	}
}

// TestStalledBodyTimesOutHTTP2: over HTTP/2 the deadline is the stream's,
// and a stalled body gets its 408 there too.
func TestStalledBodyTimesOutHTTP2(t *testing.T) {
	ended := make(chan error, 1)
	up := httptest.NewServer(readAllBody(ended))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	p := New(u, &fakeDecider{decide: allowAll}, &Settings{Policy: testPolicy(t), Identity: *testIdentity()}, &Options{UpstreamTimeout: bodyTimeout, Logf: t.Logf})
	srv := httptest.NewUnstartedServer(p)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("0123456789")) // and then nothing
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/upload", pr)
	req.ContentLength = 1000
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("stalled body: %v, want a 408", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 {
		t.Fatalf("the test spoke %s, want HTTP/2", resp.Proto)
	}
	wantBodyTimeout(t, resp, string(b))
	select {
	case err := <-ended:
		if err == nil {
			t.Error("the upstream read the whole of a body that never came")
		}
	case <-ctx.Done():
		t.Fatal("the upstream is still reading the stalled body")
	}
}
