// Package pgbus carries gaia-proxy's live stream between replicas over
// PostgreSQL LISTEN/NOTIFY (an admin.Bus), for deployments that share a
// database and no Redis.
package pgbus

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgxlisten"

	"github.com/gaia-proxy/gaia-proxy/admin"
)

// Channel is the NOTIFY channel of the live stream. Channels are
// database-wide, so each payload starts with the sender's schema and a
// newline; a Bus hears only its own schema's.
const Channel = "gaia_live"

// MaxMessage is the longest message Publish sends: NOTIFY payloads must
// be shorter than 8000 bytes, and the schema prefix takes up to 64.
const MaxMessage = 8000 - 1 - 64

// ErrTooLarge is returned by Publish for a message over MaxMessage.
var ErrTooLarge = errors.New("pgbus: message too large for NOTIFY")

// notify prefixes the message with the session's schema on the server,
// so it is the schema of the pool's search_path.
const notify = "SELECT pg_notify($1, coalesce(current_schema(), '') || chr(10) || $2)"

// retry is how long Subscribe waits before reconnecting.
const retry = time.Second

// Bus is an admin.Bus on PostgreSQL. Safe for concurrent use.
type Bus struct {
	pool *pgxpool.Pool

	// Logf receives operational logs (the listener losing its
	// connection). Nil means log.Printf. Set it before using the Bus.
	Logf func(format string, args ...any)
}

var _ admin.Bus = (*Bus)(nil)

// New returns a Bus that publishes through pool and listens on a
// connection of its own, configured like the pool's (search_path
// included, which chooses the schema).
func New(pool *pgxpool.Pool) *Bus { return &Bus{pool: pool} }

// Publish sends msg to every Bus listening on the same database and
// schema.
func (b *Bus) Publish(ctx context.Context, msg []byte) error {
	if len(msg) > MaxMessage {
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, len(msg))
	}
	if _, err := b.pool.Exec(ctx, notify, Channel, string(msg)); err != nil {
		return fmt.Errorf("pgbus: notify: %w", err)
	}
	return nil
}

// Subscribe calls handle with every message of its schema until ctx is
// done, then returns nil. It reconnects by itself, a second after
// losing its connection (messages sent meanwhile are lost).
func (b *Bus) Subscribe(ctx context.Context, handle func([]byte)) error {
	cfg := b.pool.Config().ConnConfig
	h := &handler{handle: handle}
	l := &pgxlisten.Listener{
		Connect: func(ctx context.Context) (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, cfg.Copy()) },
		LogError: func(ctx context.Context, err error) {
			if ctx.Err() == nil && !h.failing { // once per outage
				h.failing = true
				b.logf("pgbus: listen: %v (retrying every %s)", err, retry)
			}
		},
		ReconnectDelay: retry,
	}
	l.Handle(Channel, h)
	err := l.Listen(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("pgbus: listen: %w", err)
}

func (b *Bus) logf(format string, args ...any) {
	if b.Logf != nil {
		b.Logf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// handler passes on the notifications of its own schema. The Listener
// calls it, and LogError, from one goroutine.
type handler struct {
	handle  func([]byte)
	prefix  string // schema + "\n"
	failing bool
}

// HandleBacklog runs on each new connection once it listens: it learns
// the connection's schema.
func (h *handler) HandleBacklog(ctx context.Context, _ string, conn *pgx.Conn) error {
	var schema string
	if err := conn.QueryRow(ctx, "SELECT coalesce(current_schema(), '')").Scan(&schema); err != nil {
		return err
	}
	h.prefix, h.failing = schema+"\n", false
	return nil
}

// HandleNotification passes on a message of the handler's schema.
func (h *handler) HandleNotification(_ context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	if msg, ok := strings.CutPrefix(n.Payload, h.prefix); ok && h.prefix != "" {
		h.handle([]byte(msg))
	}
	return nil
}
