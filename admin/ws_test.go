package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// startStream serves an admin Server and runs its stream until the test
// ends.
func startStream(t *testing.T, o *admin.Options) (*admin.Server, *httptest.Server) {
	t.Helper()
	return admin.StartStream(t, o)
}

// wsMsg is a stream message as a client reads it.
type wsMsg struct {
	Type string          `json:"type"`
	At   string          `json:"at"`
	Data json.RawMessage `json:"data"`
}

// client is a stream client in a test.
type client struct {
	t *testing.T
	c *websocket.Conn
}

const wait = 20 * time.Second // generous: a failure, not a slow machine

// dial connects to the stream and reads its first message, a heartbeat:
// once it is read, the server has registered the client.
func dial(t *testing.T, ts *httptest.Server, o *websocket.DialOptions) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, _, err := websocket.Dial(ctx, ts.URL+"/ws/admin/quotas", o)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	cl := &client{t: t, c: c}
	if m := cl.next(); m.Type != "heartbeat" {
		t.Fatalf("first message is %q, want heartbeat", m.Type)
	}
	return cl
}

// next reads the next message.
func (cl *client) next() wsMsg {
	cl.t.Helper()
	m, err := cl.read()
	if err != nil {
		cl.t.Fatalf("read: %v", err)
	}
	return m
}

func (cl *client) read() (wsMsg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	typ, b, err := cl.c.Read(ctx)
	if err != nil {
		return wsMsg{}, err
	}
	var m wsMsg
	if typ != websocket.MessageText {
		return m, errors.New("binary message")
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, err
	}
	if _, err := time.Parse(time.RFC3339, m.At); err != nil {
		return m, err
	}
	return m, nil
}

// waitFor reads until a message of type typ for which ok holds (nil:
// any), and decodes its data into v.
func (cl *client) waitFor(typ string, v any, ok func() bool) {
	cl.t.Helper()
	for {
		m := cl.next()
		if m.Type != typ {
			continue
		}
		if err := json.Unmarshal(m.Data, v); err != nil {
			cl.t.Fatalf("%s data %s: %v", typ, m.Data, err)
		}
		if ok == nil || ok() {
			return
		}
	}
}

func fast() admin.StreamOptions {
	return admin.StreamOptions{StatsInterval: 20 * time.Millisecond, HeartbeatInterval: time.Second, SilenceTimeout: time.Minute}
}

func violationEvent(subject, path string) quota.Event {
	return quota.Event{
		Time: time.Now(), Subject: subject, KeyID: "acme-prod", User: "alice", Plan: "pro", Route: "confirm",
		Method: "POST", Path: path, Outcome: quota.RateLimited,
		Violated: &quota.Violated{Name: "pro-1s", Limit: 100, Window: time.Second},
	}
}

type statsMsg struct {
	IntervalSeconds float64 `json:"interval_seconds"`
	Requests        int64   `json:"requests"`
	Rate            float64 `json:"rate"`
	Allowed         int64   `json:"allowed"`
	RateLimited     int64   `json:"rate_limited"`
	QuotaExceeded   int64   `json:"quota_exceeded"`
	Unauthorized    int64   `json:"unauthorized"`
	ActiveSubjects  int64   `json:"active_subjects"`
	Replicas        int     `json:"replicas"`
	Redis           *admin.Check
	Database        *admin.Check
}

func TestStreamStats(t *testing.T) {
	srv, ts := startStream(t, &admin.Options{Stream: fast(), Checks: map[string]admin.Checker{
		"redis":    func(context.Context) admin.Check { return admin.Check{Status: admin.StatusOK, Mode: "in-process"} },
		"database": func(context.Context) admin.Check { return admin.Check{Status: admin.StatusDegraded, Error: "down"} },
	}})
	cl := dial(t, ts, nil)
	publish := map[quota.Outcome]int{quota.Allowed: 7, quota.RateLimited: 3, quota.QuotaExceeded: 2, quota.Unauthorized: 1}
	for o, n := range publish {
		for i := range n {
			srv.Publish(quota.Event{Subject: "key:k" + string(rune('a'+i)), Outcome: o})
		}
	}
	// The events may straddle intervals: sum the stats until they are all in.
	var sum statsMsg
	var s statsMsg
	for sum.Requests < 13 {
		cl.waitFor("stats", &s, nil)
		if s.Replicas != 1 || s.IntervalSeconds != 0.02 {
			t.Fatalf("replicas %d, interval %v; want 1, 0.02", s.Replicas, s.IntervalSeconds)
		}
		if s.Redis == nil || s.Redis.Mode != "in-process" || s.Database == nil || s.Database.Status != admin.StatusDegraded {
			t.Fatalf("redis %+v, database %+v; want the checks' results", s.Redis, s.Database)
		}
		if s.ActiveSubjects > 7 || (s.Requests > 0) != (s.Rate > 0) || (s.Requests > 0) != (s.ActiveSubjects > 0) {
			t.Fatalf("stats %+v: active subjects or rate do not match requests", s)
		}
		sum.Requests += s.Requests
		sum.Allowed += s.Allowed
		sum.RateLimited += s.RateLimited
		sum.QuotaExceeded += s.QuotaExceeded
		sum.Unauthorized += s.Unauthorized
	}
	want := statsMsg{Requests: 13, Allowed: 7, RateLimited: 3, QuotaExceeded: 2, Unauthorized: 1}
	if sum != want {
		t.Errorf("summed stats %+v, want %+v", sum, want)
	}
}

func TestStreamViolation(t *testing.T) {
	o := fast()
	o.Replica = "r1"
	srv, ts := startStream(t, &admin.Options{Stream: o})
	cl := dial(t, ts, nil)
	e := violationEvent("key:acme-prod", "/api/claude/confirm/request")
	srv.Publish(e)
	q := e
	q.Outcome, q.Path = quota.Allowed, "/shadow"
	q.Violated = &quota.Violated{Name: "free-daily", Limit: 10000, Period: "daily", Shadow: true}
	srv.Publish(q)

	type limit struct {
		Name   string
		Limit  int64
		Window string
		Period string
	}
	type violation struct {
		Subject                               string
		KeyID                                 string `json:"key_id"`
		User, Plan, Route, Method, Path, Kind string
		Shadow                                bool
		Limit                                 limit
		Replica                               string
	}
	want := []violation{
		{"key:acme-prod", "acme-prod", "alice", "pro", "confirm", "POST", "/api/claude/confirm/request", "rate_limited", false, limit{"pro-1s", 100, "1s", ""}, "r1"},
		{"key:acme-prod", "acme-prod", "alice", "pro", "confirm", "POST", "/shadow", "quota_exceeded", true, limit{"free-daily", 10000, "", "daily"}, "r1"},
	}
	for i := range want {
		var got violation
		cl.waitFor("violation", &got, nil)
		if got != want[i] {
			t.Errorf("violation %d:\n got %+v\nwant %+v", i, got, want[i])
		}
	}
}

func TestStreamHeartbeat(t *testing.T) {
	o := fast()
	o.HeartbeatInterval = 10 * time.Millisecond
	_, ts := startStream(t, &admin.Options{Stream: o})
	cl := dial(t, ts, nil)
	var hb struct{ Replica string }
	for range 3 {
		cl.waitFor("heartbeat", &hb, nil)
	}
	if hb.Replica == "" {
		t.Error("heartbeat without replica")
	}
}

// TestStreamSilence: a client that answers no ping and sends nothing is
// closed after SilenceTimeout; answering pings, or sending messages,
// keeps it.
func TestStreamSilence(t *testing.T) {
	o := admin.StreamOptions{StatsInterval: time.Hour, HeartbeatInterval: 20 * time.Millisecond, SilenceTimeout: 200 * time.Millisecond}
	_, ts := startStream(t, &admin.Options{Stream: o})
	noPong := &websocket.DialOptions{OnPingReceived: func(context.Context, []byte) bool { return false }}

	t.Run("silent", func(t *testing.T) {
		cl := dial(t, ts, noPong)
		for {
			_, err := cl.read()
			if err == nil {
				continue
			}
			if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
				t.Fatalf("closed with %v (%v), want %v", got, err, websocket.StatusPolicyViolation)
			}
			return
		}
	})
	// 40 heartbeats take four silence timeouts.
	t.Run("pongs", func(t *testing.T) {
		cl := dial(t, ts, nil)
		for range 40 {
			if m := cl.next(); m.Type != "heartbeat" {
				t.Fatalf("got %s, want heartbeat", m.Type)
			}
		}
	})
	t.Run("messages", func(t *testing.T) {
		cl := dial(t, ts, noPong)
		for range 40 {
			if m := cl.next(); m.Type != "heartbeat" {
				t.Fatalf("got %s, want heartbeat", m.Type)
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			err := cl.c.Write(ctx, websocket.MessageText, []byte(`{"type":"pong"}`))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestStreamFlood: 10,000 violations at once reach a client as a few
// dozen violation messages, and violations_dropped messages for the rest.
func TestStreamFlood(t *testing.T) {
	srv, ts := startStream(t, &admin.Options{Stream: fast()})
	cl := dial(t, ts, nil)
	const n = 10000
	e := violationEvent("key:flood", "/flood")
	for range n {
		srv.Publish(e)
	}
	var one, summarised, summaries int
	for one+summarised < n {
		m := cl.next()
		switch m.Type {
		case "violation":
			one++
		case "violations_dropped":
			var d struct{ Count int }
			if err := json.Unmarshal(m.Data, &d); err != nil || d.Count <= 0 {
				t.Fatalf("violations_dropped %s: %v", m.Data, err)
			}
			summarised += d.Count
			summaries++
		}
	}
	t.Logf("%d violation messages, %d violations_dropped messages for %d more", one, summaries, summarised)
	if one+summarised != n {
		t.Errorf("violations %d + dropped %d = %d, want %d", one, summarised, one+summarised, n)
	}
	if one > 1000 || summaries == 0 {
		t.Errorf("%d violation messages and %d violations_dropped: not coalesced", one, summaries)
	}
	if h := wsHealthOf(t, ts); h.ViolationsDropped != uint64(summarised) || h.Clients != 1 || h.MessagesSent == 0 {
		t.Errorf("/api/ws/health %+v; want 1 client, %d violations dropped", h, summarised)
	}
}

type wsHealth struct {
	Clients           int64  `json:"clients"`
	MessagesSent      uint64 `json:"messages_sent"`
	MessagesDropped   uint64 `json:"messages_dropped"`
	ViolationsDropped uint64 `json:"violations_dropped"`
}

func wsHealthOf(t *testing.T, ts *httptest.Server) wsHealth {
	t.Helper()
	resp, err := http.Get(ts.URL + "/api/ws/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h wsHealth
	dec := json.NewDecoder(resp.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/api/ws/health: %d, %v", resp.StatusCode, err)
	}
	return h
}

func TestStreamAlert(t *testing.T) {
	srv, ts := startStream(t, &admin.Options{Stream: fast()})
	cl := dial(t, ts, nil)
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a := admin.Alert{ID: "a1", Rule: "violation-burst", State: "firing", Condition: "violations_per_minute > 100", Value: 130, Threshold: 100, Since: since}
	srv.PublishAlert(a)
	var got admin.Alert
	cl.waitFor("alert", &got, nil)
	if got != a {
		t.Errorf("alert %+v, want %+v", got, a)
	}
}

func TestStreamAuth(t *testing.T) {
	_, ts := startStream(t, &admin.Options{Token: "s3cret", Stream: admin.StreamOptions{OriginPatterns: []string{"dash.example.com"}}})
	url := ts.URL + "/ws/admin/quotas"
	for _, tc := range []struct {
		name   string
		query  string
		header http.Header
		want   int // 0: connects
	}{
		{"bearer", "", http.Header{"Authorization": {"Bearer s3cret"}}, 0},
		{"query", "?token=s3cret", nil, 0},
		{"none", "", nil, http.StatusUnauthorized},
		{"wrong bearer", "", http.Header{"Authorization": {"Bearer nope"}}, http.StatusUnauthorized},
		{"wrong query", "?token=nope", nil, http.StatusUnauthorized},
		{"same-host origin", "?token=s3cret", http.Header{"Origin": {ts.URL}}, 0},
		{"allowed origin", "?token=s3cret", http.Header{"Origin": {"https://dash.example.com"}}, 0},
		{"foreign origin", "?token=s3cret", http.Header{"Origin": {"https://evil.example"}}, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, url+tc.query, &websocket.DialOptions{HTTPHeader: tc.header})
			if tc.want == 0 {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				c.CloseNow()
				return
			}
			if err == nil {
				c.CloseNow()
				t.Fatalf("connected, want %d", tc.want)
			}
			if resp == nil || resp.StatusCode != tc.want {
				t.Fatalf("dial: %v, want status %d", err, tc.want)
			}
		})
	}
}

// TestStreamShutdown: when Run ends, clients are told the server goes
// away.
func TestStreamShutdown(t *testing.T) {
	srv := admin.New(&admin.Options{Stream: fast()})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Run(ctx)
	}()
	cl := dial(t, ts, nil)
	cancel()
	for {
		if _, err := cl.read(); err != nil {
			if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
				t.Errorf("closed with %v (%v), want going away", got, err)
			}
			break
		}
	}
	<-done
}

func TestWSHealth(t *testing.T) {
	_, ts := startStream(t, &admin.Options{Token: "s3cret", Stream: fast()})
	if h := wsHealthOf(t, ts); h != (wsHealth{}) {
		t.Errorf("before any client: %+v", h)
	}
	dial(t, ts, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer s3cret"}}})
	// The client has read its heartbeat; the server counts a message once
	// its write returns, which may come a moment after that.
	for deadline := time.Now().Add(wait); ; time.Sleep(time.Millisecond) {
		h := wsHealthOf(t, ts)
		if h.Clients == 1 && h.MessagesSent > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with a client: %+v, want 1 client and its heartbeat sent", h)
		}
	}
}

func TestPublishAllocs(t *testing.T) {
	srv, ts := startStream(t, &admin.Options{Stream: fast()})
	dial(t, ts, nil)
	for _, e := range []quota.Event{
		{Subject: "key:a", Outcome: quota.Allowed, Latency: time.Millisecond},
		violationEvent("key:b", strings.Repeat("/x", 100)),
	} {
		if n := testing.AllocsPerRun(1000, func() { srv.Publish(e) }); n != 0 {
			t.Errorf("Publish(%v) allocates %v times, want 0", e.Outcome, n)
		}
	}
}

func BenchmarkPublish(b *testing.B) {
	srv := admin.New(nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Run(ctx)
	events := []quota.Event{
		{Subject: "key:a", Outcome: quota.Allowed},
		{Subject: "key:b", Outcome: quota.Allowed},
		{Subject: "ip:203.0.113.7", Outcome: quota.Allowed},
		violationEvent("key:c", "/x"),
	}
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			srv.Publish(events[i%len(events)])
		}
	})
}
