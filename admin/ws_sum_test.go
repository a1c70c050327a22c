package admin

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter/storetest"
)

// fanDriver runs a hub's fan-out and hands it, one at a time and in the
// order given, this replica's stats ticks and other replicas' snapshots,
// at the times of an injected clock: the interleavings of ticks and Bus
// deliveries are the test's, not the scheduler's.
type fanDriver struct {
	t     *testing.T
	h     *hub
	cl    *liveClient
	clock *storetest.Clock
	start time.Time
}

func newFanDriver(t *testing.T, interval time.Duration) *fanDriver {
	start := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	d := &fanDriver{t: t, clock: storetest.NewClock(start), start: start}
	d.h = newHub(StreamOptions{Replica: "A", StatsInterval: interval}, nil, t.Logf, d.clock.Now)
	d.cl = &liveClient{send: make(chan []byte, 64)}
	if !d.h.add(d.cl) {
		t.Fatal("hub closed")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.h.fanout(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done; d.h.remove(d.cl) })
	return d
}

// at moves the clock to offset from the start.
func (d *fanDriver) at(offset time.Duration) { d.clock.Set(d.start.Add(offset)) }

// peer delivers a snapshot of replica, as the Bus does, and returns once
// the fan-out has taken it in.
func (d *fanDriver) peer(replica string, s *liveSnapshot) {
	d.h.inbox <- &busEnvelope{Replica: replica, Stats: s}
	for len(d.h.inbox) > 0 { // taken; the fan-out is on it
		runtime.Gosched()
	}
	// The fan-out handles one message at a time: once the alert is out,
	// the snapshot is in.
	d.h.alerts <- Alert{Rule: "sync"}
	if m := d.read(); m.Type != "alert" {
		d.t.Fatalf("got a %s message, want the sync alert", m.Type)
	}
}

// tick ends this replica's interval with local and returns the stats
// message sent for it.
func (d *fanDriver) tick(local *liveSnapshot) statsData {
	d.h.stats <- local
	m := d.read()
	if m.Type != "stats" {
		d.t.Fatalf("got a %s message, want stats", m.Type)
	}
	var s statsData
	if err := json.Unmarshal(m.Data, &s); err != nil {
		d.t.Fatal(err)
	}
	return s
}

func (d *fanDriver) read() (m struct {
	Type string
	Data json.RawMessage
}) {
	d.t.Helper()
	select {
	case msg := <-d.cl.send:
		if err := json.Unmarshal(msg, &m); err != nil {
			d.t.Fatal(err)
		}
	case <-time.After(10 * time.Second): // a hang, not a timing
		d.t.Fatal("no message from the fan-out within 10 s")
	}
	return m
}

func snapshot(interval time.Duration, allowed int64) *liveSnapshot {
	return &liveSnapshot{Interval: interval.Seconds(), liveCounts: liveCounts{Allowed: allowed}}
}

// TestStatsLateSnapshot: a replica's snapshot that arrives just after
// this replica's tick (a slow health check, jitter) counts at the next
// tick, with the one that follows it on time; none counts twice, none
// is lost.
func TestStatsLateSnapshot(t *testing.T) {
	const iv = time.Second
	d := newFanDriver(t, iv)
	ms := time.Millisecond
	type step struct {
		at    time.Duration
		peer  int64 // B's snapshot, of that many requests; 0: A ticks
		local int64
		want  int64 // the stats message's requests, when A ticks
	}
	steps := []step{
		{at: 400 * ms, peer: 10},
		{at: 1000 * ms, local: 1, want: 11},
		{at: 1400 * ms, peer: 20},
		{at: 2000 * ms, local: 1, want: 21},
		{at: 2000*ms + 16*ms, peer: 30}, // B's third, late by 0.4 s + 16 ms
		{at: 2400 * ms, peer: 40},       // and its fourth on time
		{at: 3000 * ms, local: 1, want: 71},
		{at: 4000 * ms, local: 1, want: 1}, // nothing came from B
		{at: 4400 * ms, peer: 50},
		{at: 5000 * ms, local: 1, want: 51},
	}
	var shown, served int64
	for _, s := range steps {
		d.at(s.at)
		if s.peer > 0 {
			d.peer("B", snapshot(iv, s.peer))
			served += s.peer
			continue
		}
		got := d.tick(snapshot(iv, s.local))
		served += s.local
		shown += got.Requests
		if got.Requests != s.want || got.Allowed != s.want {
			t.Errorf("at %v: requests %d, allowed %d; want %d", s.at, got.Requests, got.Allowed, s.want)
		}
		if got.Replicas != 2 {
			t.Errorf("at %v: replicas %d, want 2 (B was heard from within two intervals)", s.at, got.Replicas)
		}
	}
	if shown != served {
		t.Errorf("stats summed to %d requests over the run; the replicas served %d", shown, served)
	}
}

// TestStatsRateLateSnapshot: the rate is a level. A tick that got no
// snapshot from a replica still live keeps its last rate, and two
// snapshots in one interval give their rate, not twice it.
func TestStatsRateLateSnapshot(t *testing.T) {
	const iv = time.Second
	d := newFanDriver(t, iv)
	d.at(400 * time.Millisecond)
	d.peer("B", snapshot(iv, 10))
	d.at(iv)
	if got := d.tick(snapshot(iv, 1)); got.Rate != 11 {
		t.Errorf("rate %v, want 11", got.Rate)
	}
	d.at(2 * iv)
	if got := d.tick(snapshot(iv, 1)); got.Rate != 11 || got.Requests != 1 {
		t.Errorf("B late: rate %v, requests %d; want 11 (B's last rate) and 1", got.Rate, got.Requests)
	}
	d.at(2*iv + 100*time.Millisecond)
	d.peer("B", snapshot(iv, 10))
	d.at(2*iv + 400*time.Millisecond)
	d.peer("B", snapshot(iv, 30))
	d.at(3 * iv)
	if got := d.tick(snapshot(iv, 1)); got.Rate != 21 || got.Requests != 41 {
		t.Errorf("two of B's in one interval: rate %v, requests %d; want 21 (40 over 2 s, and 1) and 41", got.Rate, got.Requests)
	}
}

// TestStatsSilentReplica: a replica that goes silent stays in the
// replica count, adding nothing, for two intervals after its last
// snapshot, then drops out; what it sent last is counted once all the
// same.
func TestStatsSilentReplica(t *testing.T) {
	const iv = time.Second
	d := newFanDriver(t, iv)
	d.at(500 * time.Millisecond)
	d.peer("B", &liveSnapshot{Interval: 1, liveCounts: liveCounts{Allowed: 7}, Database: &Check{Status: StatusDown}})
	d.peer("C", snapshot(iv, 3))
	for i, want := range []struct {
		requests int64
		replicas int
		database bool
	}{
		{10, 3, true}, // at 1 s
		{0, 3, true},  // at 2 s: 1.5 s since B and C
		{0, 1, false}, // at 3 s: 2.5 s since; gone
		{0, 1, false},
	} {
		d.at(time.Duration(i+1) * iv)
		got := d.tick(snapshot(iv, 0))
		if got.Requests != want.requests || got.Replicas != want.replicas || (got.Database != nil) != want.database {
			t.Errorf("tick %d: requests %d, replicas %d, database %v; want %d, %d, reported %v",
				i+1, got.Requests, got.Replicas, got.Database, want.requests, want.replicas, want.database)
		}
	}
}

// TestStatsSumProperty: replicas ticking at random offsets from this
// one, their snapshots delayed at random (now and then by more than an
// interval, even past the two-interval expiry): over the run, the
// stats messages sum to exactly what every replica served, outcome by
// outcome.
func TestStatsSumProperty(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			const iv = time.Second
			const ticks = 60
			r := rand.New(rand.NewPCG(seed, 42))
			d := newFanDriver(t, iv)
			counts := func() liveCounts {
				n := func() int64 { return r.Int64N(20) }
				return liveCounts{Allowed: n(), RateLimited: n(), QuotaExceeded: n(), Unavailable: n(), Unauthorized: n(), Exempt: n()}
			}
			type event struct {
				at   time.Duration
				peer string // "": A ticks
				snap *liveSnapshot
			}
			var events []event
			var served liveCounts
			for k := 1; k <= ticks+3; k++ { // three more to take in the last late ones
				s := &liveSnapshot{Interval: 1, liveCounts: counts()}
				served.add(s.liveCounts)
				events = append(events, event{at: time.Duration(k) * iv, snap: s})
			}
			peers := 1 + r.IntN(5)
			for p := range peers {
				name := fmt.Sprint("peer-", p)
				offset := time.Duration(r.Int64N(int64(iv)))
				var last time.Duration
				for k := range ticks {
					delay := time.Duration(r.Int64N(int64(iv / 20))) // the health checks, the Bus
					switch r.IntN(10) {
					case 0:
						delay += time.Duration(r.Int64N(int64(5 * iv / 2))) // a stalled check
					case 1:
						delay += time.Duration(r.Int64N(int64(iv)))
					}
					// The Bus delivers one replica's messages in order.
					at := max(last, offset+time.Duration(k)*iv+delay)
					last = at
					s := &liveSnapshot{Interval: 1, liveCounts: counts()}
					served.add(s.liveCounts)
					events = append(events, event{at: at, peer: name, snap: s})
				}
			}
			// In time order; A's tick first on a tie (the case in point).
			slices.SortStableFunc(events, func(a, b event) int {
				if c := cmp.Compare(a.at, b.at); c != 0 {
					return c
				}
				if a.peer == "" {
					return -1
				}
				if b.peer == "" {
					return 1
				}
				return 0
			})
			if last := events[len(events)-1]; last.peer != "" {
				t.Fatalf("the last event is %s's at %v, not a tick of A's", last.peer, last.at)
			}
			var shown liveCounts
			var requests int64
			for _, e := range events {
				d.at(e.at)
				if e.peer != "" {
					d.peer(e.peer, e.snap)
					continue
				}
				got := d.tick(e.snap)
				if got.Requests != got.total() {
					t.Fatalf("at %v: requests %d, the outcomes sum to %d", e.at, got.Requests, got.total())
				}
				if got.Replicas < 1 || got.Replicas > 1+peers {
					t.Fatalf("at %v: %d replicas of %d", e.at, got.Replicas, 1+peers)
				}
				shown.add(got.liveCounts)
				requests += got.Requests
			}
			if shown != served || requests != served.total() {
				t.Errorf("%d replicas: the stats summed to %+v, %d requests; the replicas served %+v, %d",
					1+peers, shown, requests, served, served.total())
			}
		})
	}
}
