package pgbus_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/admin/bustest"
	"github.com/gaia-proxy/gaia-proxy/admin/pgbus"
	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
)

func pool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestBus(t *testing.T) {
	url := testenv.Schema(t)
	bustest.Run(t, func(t *testing.T) admin.Bus { return pgbus.New(pool(t, url)) })
}

// TestSchemas: NOTIFY is database-wide; a Bus hears its own schema's
// messages only. And a message of MaxBusMessage bytes fits.
func TestSchemas(t *testing.T) {
	mine, other := pgbus.New(pool(t, testenv.Schema(t))), pgbus.New(pool(t, testenv.Schema(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := make(chan string, 10)
	subscribed := make(chan error, 1)
	go func() { subscribed <- mine.Subscribe(ctx, func(b []byte) { got <- string(b) }) }()
	msg := strings.Repeat("0123456789", admin.MaxBusMessage/10)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := other.Publish(ctx, []byte("other schema")); err != nil {
			t.Fatal(err)
		}
		if err := mine.Publish(ctx, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m != msg {
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
		case <-tick.C: // not listening yet: NOTIFY keeps nothing
		}
	}
}

func TestTooLarge(t *testing.T) {
	bus := pgbus.New(pool(t, testenv.Schema(t)))
	err := bus.Publish(context.Background(), make([]byte, pgbus.MaxMessage+1))
	if !errors.Is(err, pgbus.ErrTooLarge) {
		t.Errorf("Publish of %d bytes: %v, want ErrTooLarge", pgbus.MaxMessage+1, err)
	}
	// The longest allowed, with the longest schema name, fits NOTIFY.
	url := testenv.Schema(t)
	p := pool(t, url)
	long := "test_" + strings.Repeat("s", 42) + rand.Text()[:16] // 63 bytes, the most PostgreSQL allows
	if _, err := p.Exec(context.Background(), `CREATE SCHEMA "`+long+`"`); err != nil {
		t.Fatal(err)
	}
	defer p.Exec(context.Background(), `DROP SCHEMA "`+long+`"`)
	cfg := p.Config()
	cfg.ConnConfig.RuntimeParams["search_path"] = `"` + long + `"`
	lp, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer lp.Close()
	if err := pgbus.New(lp).Publish(context.Background(), []byte(strings.Repeat("x", pgbus.MaxMessage))); err != nil {
		t.Errorf("Publish of MaxMessage bytes in a 63-byte schema: %v", err)
	}
}
