package pgbus_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

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
	bustest.RunIsolation(t, pgbus.New(pool(t, testenv.Schema(t))), pgbus.New(pool(t, testenv.Schema(t))))
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
