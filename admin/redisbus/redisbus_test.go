package redisbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/admin/bustest"
	"github.com/gaia-proxy/gaia-proxy/admin/redisbus"
	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
)

func TestBus(t *testing.T) {
	rdb := testenv.Redis(t)
	channel := testenv.Prefix(t) + "live"
	bustest.Run(t, func(*testing.T) admin.Bus { return redisbus.New(rdb, channel) })
}

// TestRoundTrip: a message of MaxBusMessage bytes arrives whole, on its
// channel only.
func TestRoundTrip(t *testing.T) {
	rdb := testenv.Redis(t)
	prefix := testenv.Prefix(t)
	mine, other := redisbus.New(rdb, prefix+"mine"), redisbus.New(rdb, prefix+"other")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := make(chan string, 10)
	subscribed := make(chan error, 1)
	go func() { subscribed <- mine.Subscribe(ctx, func(b []byte) { got <- string(b) }) }()
	msg := make([]byte, admin.MaxBusMessage)
	for i := range msg {
		msg[i] = 'a' + byte(i%26)
	}
	// Publish until the subscription is up: pub/sub keeps nothing.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := other.Publish(ctx, []byte("other channel")); err != nil {
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
