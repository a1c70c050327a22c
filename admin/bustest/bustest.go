// Package bustest is the contract test of admin.Bus implementations: two
// admin Servers on one bus share one live stream.
package bustest

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// RunIsolation checks that mine hears messages published on mine only,
// not those of other, a bus on another channel (or schema) of the same
// server, and that a message of admin.MaxBusMessage bytes arrives whole.
func RunIsolation(t *testing.T, mine, other admin.Bus) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	got := make(chan string, 10)
	subscribed := make(chan error, 1)
	go func() { subscribed <- mine.Subscribe(ctx, func(b []byte) { got <- string(b) }) }()
	msg := make([]byte, admin.MaxBusMessage)
	for i := range msg {
		msg[i] = 'a' + byte(i%26)
	}
	// Publish until the subscription is up: the buses keep nothing.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := other.Publish(ctx, []byte("another channel")); err != nil {
			t.Fatal(err)
		}
		if err := mine.Publish(ctx, msg); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m != string(msg) {
				t.Fatalf("got %d bytes %.20q..., want the %d sent", len(m), m, len(msg))
			}
			cancel()
			if err := <-subscribed; err != nil {
				t.Errorf("Subscribe returned %v after ctx ended, want nil", err)
			}
			return
		case err := <-subscribed:
			t.Fatalf("Subscribe returned early: %v", err)
		case <-ctx.Done():
			t.Fatal("no message")
		case <-tick.C:
		}
	}
}

// wait bounds every read: reaching it is a failure, not a slow machine.
const wait = 30 * time.Second

// Run checks, with two replicas whose buses newBus returns (one call per
// replica, both on the same channel): stats are summed over the
// replicas, each subject counted once; a violation published on one
// reaches the other's clients; a replica ignores its own echoes.
func Run(t *testing.T, newBus func(t *testing.T) admin.Bus) {
	a, b := start(t, "replica-a", newBus(t)), start(t, "replica-b", newBus(t))
	ca, cb := dial(t, a.url), dial(t, b.url)

	// Traffic: a refuses on quota, b allows; subjects overlap.
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go traffic(ctx, a.srv, quota.QuotaExceeded, 0, done) // u0 ... u9
	go traffic(ctx, b.srv, quota.Allowed, 5, done)       // u5 ... u14
	defer func() { stop(); <-done; <-done }()
	for _, c := range []*client{ca, cb} {
		var s struct {
			Allowed        int64 `json:"allowed"`
			QuotaExceeded  int64 `json:"quota_exceeded"`
			ActiveSubjects int64 `json:"active_subjects"`
			Replicas       int   `json:"replicas"`
		}
		c.waitFor(t, "stats", &s, func() bool {
			// Each replica's own counts, and 15 subjects, not 20.
			return s.Replicas == 2 && s.Allowed > 0 && s.QuotaExceeded > 0 && s.ActiveSubjects == 15
		})
	}

	// Both hear each other now. A violation on a reaches b's client, and
	// a's client once: a ignores its echo.
	a.srv.Publish(violation("/from-a"))
	var v struct{ Path, Replica string }
	cb.waitFor(t, "violation", &v, func() bool { return v.Path == "/from-a" && v.Replica == "replica-a" })
	ca.waitFor(t, "violation", &v, func() bool { return v.Path == "/from-a" })
	// b's violation, sent after b heard a's, reaches a after a's echo
	// would have.
	b.srv.Publish(violation("/from-b"))
	ca.waitFor(t, "violation", &v, func() bool {
		if v.Path == "/from-a" {
			t.Fatal("replica-a got its own violation back from the bus")
		}
		return v.Path == "/from-b" && v.Replica == "replica-b"
	})
}

type replica struct {
	srv *admin.Server
	url string
}

func start(t *testing.T, name string, bus admin.Bus) replica {
	srv := admin.New(&admin.Options{Stream: admin.StreamOptions{
		Bus: bus, Replica: name, StatsInterval: 100 * time.Millisecond, HeartbeatInterval: time.Second, SilenceTimeout: time.Minute,
	}})
	ts := httptest.NewServer(srv)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		srv.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-ran
		ts.Close()
	})
	return replica{srv: srv, url: ts.URL}
}

// traffic publishes outcome for subjects u<from> ... u<from+9> until ctx
// is done.
func traffic(ctx context.Context, srv *admin.Server, outcome quota.Outcome, from int, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		for i := range 10 {
			srv.Publish(quota.Event{Subject: "user:u" + strconv.Itoa(from+i), Outcome: outcome})
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func violation(path string) quota.Event {
	return quota.Event{Time: time.Now(), Subject: "key:bus", Method: "GET", Path: path, Outcome: quota.RateLimited,
		Violated: &quota.Violated{Name: "free-1s", Limit: 10, Window: time.Second}}
}

type client struct{ c *websocket.Conn }

func dial(t *testing.T, url string) *client {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url+"/ws/admin/quotas", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return &client{c: c}
}

// waitFor reads until a message of type typ whose data, decoded into v,
// satisfies ok.
func (c *client) waitFor(t *testing.T, typ string, v any, ok func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var last []byte
	for {
		_, b, err := c.c.Read(ctx)
		if err != nil {
			t.Fatalf("waiting for %s: %v (last %s)", typ, err, last)
		}
		var m struct {
			Type string
			Data json.RawMessage
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m.Type != typ {
			continue
		}
		last = b
		if err := json.Unmarshal(m.Data, v); err != nil {
			t.Fatal(err)
		}
		if ok() {
			return
		}
	}
}
