package admin

import (
	"context"
	"sync"
)

// MaxBusMessage bounds every message the live stream publishes on a Bus,
// in bytes, so that it fits a PostgreSQL NOTIFY payload (under 8000
// bytes) with room for a schema name.
const MaxBusMessage = 7000

// Bus carries the live stream between the replicas of one deployment, so
// that every replica's stream shows the whole cluster: each replica
// publishes its violations and, every stats interval, its own counters;
// every replica hears every message, its own included (and ignores its
// own). Delivery is best effort: messages sent while the bus is down are
// lost. Implementations: redisbus (Redis pub/sub), pgbus (PostgreSQL
// LISTEN/NOTIFY), and LocalBus within one process.
type Bus interface {
	// Publish sends msg, at most MaxBusMessage bytes, to every
	// subscriber. The stream calls it off the request path, with a
	// deadline.
	Publish(ctx context.Context, msg []byte) error
	// Subscribe calls handle with each message published on the bus
	// until ctx is done, then returns nil; it rides out outages by
	// itself, and returns an error only when it cannot go on. handle
	// runs on one goroutine, must return quickly, and must not keep msg.
	Subscribe(ctx context.Context, handle func(msg []byte)) error
}

// LocalBus is a Bus within one process, for Servers that share a process
// (tests, several listeners in one binary). The zero value is ready.
type LocalBus struct {
	mu   sync.RWMutex
	subs map[*func([]byte)]struct{}
}

var _ Bus = (*LocalBus)(nil)

// Publish hands a copy of msg to every subscriber, synchronously.
func (b *LocalBus) Publish(ctx context.Context, msg []byte) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for h := range b.subs {
		(*h)(append([]byte(nil), msg...))
	}
	return nil
}

// Subscribe calls handle with every message published until ctx is done.
func (b *LocalBus) Subscribe(ctx context.Context, handle func([]byte)) error {
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[*func([]byte)]struct{}{}
	}
	b.subs[&handle] = struct{}{}
	b.mu.Unlock()
	<-ctx.Done()
	b.mu.Lock()
	delete(b.subs, &handle)
	b.mu.Unlock()
	return nil
}
