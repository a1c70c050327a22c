package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

// stuckServer starts a Server with one client that connected and never
// reads, whose queue is full, and returns it with events to publish.
func stuckServer(tb testing.TB) (*Server, []quota.Event) {
	srv, ts := StartStream(tb, &Options{Stream: StreamOptions{
		StatsInterval: 50 * time.Millisecond, HeartbeatInterval: time.Minute, SilenceTimeout: time.Minute,
		ViolationRate: 1_000_000, SendBuffer: 16, // every violation is a message: a client fills fast
	}})

	violation := quota.Event{Subject: "key:v", Outcome: quota.RateLimited, Path: strings.Repeat("/stuck", 170),
		Violated: &quota.Violated{Name: "free-1s", Limit: 10, Window: time.Second}}
	c, _, err := websocket.Dial(context.Background(), ts.URL+"/ws/admin/quotas", nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.CloseNow() }) // and never reads
	stuck := func() bool {
		h := srv.hub
		h.mu.Lock()
		defer h.mu.Unlock()
		for cl := range h.clients {
			return len(cl.send) == cap(cl.send)
		}
		return false
	}
	deadline := time.Now().Add(20 * time.Second)
	for !stuck() {
		if time.Now().After(deadline) {
			tb.Fatal("the client's queue never filled")
		}
		for range 1000 {
			srv.Publish(violation)
		}
		runtime.Gosched()
	}
	return srv, []quota.Event{
		{Subject: "key:a", Outcome: quota.Allowed},
		{Subject: "key:b", Outcome: quota.Allowed},
		{Subject: "ip:203.0.113.7", Outcome: quota.Allowed},
		violation,
	}
}

// TestStuckClient: a client that connects and never reads never holds
// Publish up: with its queue full, Publish goes on from 8 goroutines,
// and what the client cannot take is dropped and counted. (How fast
// Publish is then: BenchmarkPublishStuckClient.)
func TestStuckClient(t *testing.T) {
	srv, events := stuckServer(t)
	dropped := srv.hub.violationsDropped.Load()
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 10_000 {
					srv.Publish(events[(g+i)%len(events)])
				}
			})
		}
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second): // a blocked Publish never returns; the margin is for a busy machine
		t.Fatal("80,000 Publish calls did not return within 30 s of a client that reads nothing")
	}
	// The fan-out counts what the client missed as it works through the
	// published events, after Publish has returned.
	for deadline := time.Now().Add(10 * time.Second); srv.hub.violationsDropped.Load() == dropped; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no violation was counted as dropped for the stuck client within 10 s of 80,000 Publish calls")
		}
	}
}

// BenchmarkPublishStuckClient is BenchmarkPublish with a client that
// never reads, its queue full: Publish should cost about the same.
func BenchmarkPublishStuckClient(b *testing.B) {
	srv, events := stuckServer(b)
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			srv.Publish(events[i%len(events)])
		}
	})
}

func TestSubjectSketch(t *testing.T) {
	for _, n := range []int{0, 1, 2, 5, 15, 50, 200, 1000, 10000, 50000} {
		var s subjectSketch
		for i := range n {
			s.add(fmt.Sprintf("key:%d", i))
			s.add(fmt.Sprintf("key:%d", i/2)) // repeats count once
		}
		got := estimate(s.registers())
		tolerance := max(0.05*float64(n), 1) // ~2 standard errors
		if n <= 15 {
			tolerance = 0
		}
		if math.Abs(float64(got-int64(n))) > tolerance {
			t.Errorf("estimate of %d subjects: %d", n, got)
		}
	}
}

// TestSubjectSketchMerge: merged sketches count the union, each subject
// once, not the sum.
func TestSubjectSketchMerge(t *testing.T) {
	var a, b subjectSketch
	for i := range 3000 {
		a.add(fmt.Sprintf("user:%d", i))      // 0..2999
		b.add(fmt.Sprintf("user:%d", i+2000)) // 2000..4999
	}
	regs := a.registers()
	mergeRegisters(regs, b.registers())
	if got := estimate(regs); math.Abs(float64(got)-5000) > 250 {
		t.Errorf("union of 3000 and 3000 subjects sharing 1000: %d, want about 5000", got)
	}
	before := estimate(regs)
	mergeRegisters(regs, []byte{1, 2, 3}) // another size: ignored
	if got := estimate(regs); got != before {
		t.Errorf("merging registers of another size changed the estimate from %d to %d", before, got)
	}
}

func TestSplitEnvelope(t *testing.T) {
	v := busViolation{liveViolation: liveViolation{Subject: "key:a", Path: strings.Repeat("/p", 500)}}
	env := &busEnvelope{Replica: "r", Dropped: 3}
	for range 40 {
		env.Violations = append(env.Violations, v)
	}
	huge := v
	huge.Path = strings.Repeat("\x01", maxViolationPath) // escapes to 6 bytes each
	huge.Subject, huge.User, huge.Plan = strings.Repeat("\x01", maxViolationField), strings.Repeat("\x01", maxViolationField), strings.Repeat("\x01", maxViolationField)
	env.Violations = append(env.Violations, huge)

	var violations int
	var dropped uint64
	for _, msg := range splitEnvelope(env) {
		if len(msg) > MaxBusMessage {
			t.Errorf("message of %d bytes, over %d", len(msg), MaxBusMessage)
		}
		var e busEnvelope
		if err := json.Unmarshal(msg, &e); err != nil {
			t.Fatal(err)
		}
		violations += len(e.Violations)
		dropped += e.Dropped
	}
	if violations != 40 || dropped != 4 {
		t.Errorf("%d violations and %d dropped, want 40 and 4 (3, and the one too long alone)", violations, dropped)
	}
}

// flakyBus fails to subscribe with errs, in turn, then holds a
// subscription until ctx ends; it records when each attempt came.
type flakyBus struct {
	LocalBus
	errs     []error
	mu       sync.Mutex
	attempts []time.Time
}

func (b *flakyBus) Subscribe(ctx context.Context, handle func([]byte)) error {
	b.mu.Lock()
	n := len(b.attempts)
	b.attempts = append(b.attempts, time.Now())
	b.mu.Unlock()
	if n < len(b.errs) {
		return b.errs[n]
	}
	<-ctx.Done()
	return nil
}

// TestBusRetry: while the Bus cannot be subscribed to, the hub tries
// again after pauses that double up to a bound, and logs an error once,
// not at every attempt (Redis away would otherwise log every second).
func TestBusRetry(t *testing.T) {
	down := errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
	other := errors.New("NOPERM this user has no permissions to access the channel")
	bus := &flakyBus{errs: []error{down, down, down, down, down, other, other}}
	var mu sync.Mutex
	var logs []string
	h := newHub(StreamOptions{Bus: bus}, nil, func(format string, args ...any) {
		mu.Lock()
		logs = append(logs, fmt.Sprintf(format, args...))
		mu.Unlock()
	}, time.Now)
	h.busRetry.min, h.busRetry.max = 5*time.Millisecond, 40*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.subscribe(ctx)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		bus.mu.Lock()
		n := len(bus.attempts)
		bus.mu.Unlock()
		if n == len(bus.errs)+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d attempts to subscribe within 10 s, want %d", n, len(bus.errs)+1)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	// Pauses of at least 5, 10, 20, 40, 40, 40, 40 ms: 195 ms in all at
	// the least (a sleep may run long, never short).
	if took := bus.attempts[len(bus.attempts)-1].Sub(bus.attempts[0]); took < 195*time.Millisecond {
		t.Errorf("%d attempts in %v, want pauses doubling from 5 ms to 40 ms (195 ms at least)", len(bus.attempts), took)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logs) != 2 || !strings.Contains(logs[0], "connection refused") || !strings.Contains(logs[1], "NOPERM") {
		t.Errorf("logged %q, want each error once", logs)
	}
}
