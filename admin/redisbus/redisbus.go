// Package redisbus carries gaia-proxy's live stream between replicas over
// Redis pub/sub (an admin.Bus).
package redisbus

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gaia-proxy/gaia-proxy/admin"
)

// DefaultChannel is the pub/sub channel New uses for "".
const DefaultChannel = "gaia:live"

// rediser is what Bus needs of a client: *redis.Client,
// *redis.ClusterClient and redis.UniversalClient all have it.
type rediser interface {
	Publish(ctx context.Context, channel string, message any) *redis.IntCmd
	Subscribe(ctx context.Context, channels ...string) *redis.PubSub
}

// Bus is an admin.Bus on one Redis pub/sub channel. Safe for concurrent
// use.
type Bus struct {
	rdb     rediser
	channel string
	// Logf receives one line when Subscribe finds Redis away and one
	// when it subscribes after all; nil means log.Printf.
	Logf func(format string, args ...any)
}

// retry is how long Subscribe waits between attempts while Redis is away.
const retry = time.Second

var _ admin.Bus = (*Bus)(nil)

// New returns a Bus on channel ("" means DefaultChannel). Pub/sub
// channels are server-wide, whatever the database number: deployments
// sharing a Redis need channels of their own.
func New(rdb rediser, channel string) *Bus {
	if channel == "" {
		channel = DefaultChannel
	}
	return &Bus{rdb: rdb, channel: channel}
}

// Publish sends msg to every subscriber of the channel.
func (b *Bus) Publish(ctx context.Context, msg []byte) error {
	if err := b.rdb.Publish(ctx, b.channel, msg).Err(); err != nil {
		return fmt.Errorf("redisbus: publish on %q: %w", b.channel, err)
	}
	return nil
}

// Subscribe calls handle with every message of the channel until ctx is
// done. While Redis is away it tries again every retry (logging the
// outage once); once subscribed, go-redis reconnects and resubscribes by
// itself after a lost connection (messages sent meanwhile are lost).
func (b *Bus) Subscribe(ctx context.Context, handle func([]byte)) error {
	ps := b.rdb.Subscribe(ctx, b.channel)
	defer ps.Close()
	for failing := false; ; {
		_, err := ps.Receive(ctx) // go-redis dials and subscribes anew
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil && failing:
			b.logf("redisbus: subscribed to %q", b.channel)
		case err != nil && !failing:
			failing = true
			b.logf("redisbus: subscribe to %q: %v (retrying every %s)", b.channel, err, retry)
		}
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
	ch := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-ch:
			if !ok {
				return fmt.Errorf("redisbus: subscription to %q closed", b.channel)
			}
			handle([]byte(m.Payload))
		}
	}
}

func (b *Bus) logf(format string, args ...any) {
	if b.Logf != nil {
		b.Logf(format, args...)
		return
	}
	log.Printf(format, args...)
}
