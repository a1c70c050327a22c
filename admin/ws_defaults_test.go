package admin

import (
	"testing"
	"time"
)

// TestStreamDefaults: the live stream's zero options mean what
// StreamOptions documents (stats every 5s, heartbeat every 10s, a client
// silent for 30s is closed, 50 violations a second, 64 queued
// messages), and the hub a Server builds runs with them. Every other
// test sets its own, so only this one sees the defaults.
func TestStreamDefaults(t *testing.T) {
	// knobs are the options with a default, Replica aside.
	type knobs struct {
		stats, heartbeat, silence time.Duration
		rate, buffer              int
	}
	want := knobs{stats: 5 * time.Second, heartbeat: 10 * time.Second, silence: 30 * time.Second, rate: 50, buffer: 64}
	check := func(t *testing.T, what string, got StreamOptions) {
		t.Helper()
		if g := (knobs{got.StatsInterval, got.HeartbeatInterval, got.SilenceTimeout, got.ViolationRate, got.SendBuffer}); g != want {
			t.Errorf("%s: got %+v, want %+v", what, g, want)
		}
		if got.Replica == "" {
			t.Errorf("%s: no replica name", what)
		}
	}

	check(t, "zero options", StreamOptions{}.withDefaults())
	check(t, "negative options", StreamOptions{
		StatsInterval: -1, HeartbeatInterval: -1, SilenceTimeout: -1, ViolationRate: -1, SendBuffer: -1,
	}.withDefaults())

	h := newHub(StreamOptions{}, nil, t.Logf, time.Now)
	t.Cleanup(h.abortNow)
	check(t, "newHub", h.o)

	set := StreamOptions{
		Replica:       "r1",
		StatsInterval: time.Second, HeartbeatInterval: 2 * time.Second, SilenceTimeout: 3 * time.Second,
		ViolationRate: 7, SendBuffer: 8,
	}
	if got := set.withDefaults(); got.Replica != set.Replica || got.StatsInterval != set.StatsInterval ||
		got.HeartbeatInterval != set.HeartbeatInterval || got.SilenceTimeout != set.SilenceTimeout ||
		got.ViolationRate != set.ViolationRate || got.SendBuffer != set.SendBuffer {
		t.Errorf("withDefaults(%+v) = %+v: options set must stay", set, got)
	}
}
