package redisbus_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/admin/bustest"
	"github.com/gaia-proxy/gaia-proxy/admin/redisbus"
	"github.com/gaia-proxy/gaia-proxy/internal/relay"
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
	bustest.RunIsolation(t, redisbus.New(rdb, prefix+"mine"), redisbus.New(rdb, prefix+"other"))
}

// TestRedisAway: Redis is away when Subscribe starts. Subscribe does not
// give up (the Bus contract: it rides out outages), logs the outage
// once, and hears messages once Redis is back.
func TestRedisAway(t *testing.T) {
	rdb := testenv.Redis(t)
	rl := relay.New(t, rdb.Options().Addr)
	rl.Cut()
	away := redis.NewClient(&redis.Options{Addr: rl.Addr(), MaxRetries: -1})
	t.Cleanup(func() { away.Close() })
	var mu sync.Mutex
	var logs []string
	channel := testenv.Prefix(t) + "live"
	b := redisbus.New(away, channel)
	b.Logf = func(format string, args ...any) {
		mu.Lock()
		logs = append(logs, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- b.Subscribe(ctx, func(m []byte) { got <- string(m) }) }()
	for logged := false; !logged; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		logged = len(logs) > 0
		mu.Unlock()
		select {
		case err := <-done:
			t.Fatalf("Subscribe gave up while Redis was away: %v", err)
		case <-ctx.Done():
			t.Fatal("Subscribe said nothing of Redis being away")
		default:
		}
	}
	time.Sleep(1500 * time.Millisecond) // past one more attempt
	select {
	case err := <-done:
		t.Fatalf("Subscribe gave up while Redis was away: %v", err)
	default:
	}
	rl.Restore()
	pub := redisbus.New(rdb, channel)
	for received := false; !received; {
		if err := pub.Publish(ctx, []byte("back")); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m != "back" {
				t.Fatalf("got %q", m)
			}
			received = true
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("no message after Redis came back; logged %q", logs)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Subscribe returned %v after ctx ended, want nil", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logs) != 2 || !strings.Contains(logs[0], "retrying") || !strings.Contains(logs[1], "subscribed") {
		t.Errorf("logged %q, want the outage once and the subscription", logs)
	}
}
