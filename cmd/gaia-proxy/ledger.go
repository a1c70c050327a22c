package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/config"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/migrations"
	"github.com/gaia-proxy/gaia-proxy/quota"
	"github.com/gaia-proxy/gaia-proxy/quota/boltstore"
	"github.com/gaia-proxy/gaia-proxy/quota/pgstore"
	"github.com/jackc/pgx/v5/pgxpool"
)

// journalStore is what the journal writes to and the admin API reads.
type journalStore interface {
	quota.JournalStore
	quota.JournalReader
}

// ruleSource holds runtime rules and says when they change.
type ruleSource interface {
	Rules(ctx context.Context, loc *time.Location) ([]limiter.Rule, error)
	WatchRules(ctx context.Context, onChange func()) error
}

// ledger is the durable side of gaia-proxy: PostgreSQL when
// database.url is set, else the embedded file in data_dir.
type ledger struct {
	mode    string // "postgres" or "embedded"
	usage   quota.Store
	journal journalStore
	rules   ruleSource
	admin   admin.Store   // what the admin API reads and changes
	pool    *pgxpool.Pool // nil when embedded
	ping    func(context.Context) error
	close   func()
}

// openLedger opens the durable store. With PostgreSQL, pending
// migrations are applied when migrate is set and refused otherwise; a
// database that cannot be reached at start is logged, not fatal: the hot
// path does not need it, and ledger writes wait for it.
func openLedger(ctx context.Context, cfg *config.Config, migrate bool, logf func(string, ...any)) (*ledger, error) {
	if cfg.Database.URL == "" {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("data_dir: %w", err)
		}
		b, err := boltstore.Open(filepath.Join(cfg.DataDir, "gaia.db"))
		if err != nil {
			return nil, err
		}
		return &ledger{
			mode: "embedded", usage: b, journal: b, rules: b, admin: b,
			ping:  func(context.Context) error { return nil },
			close: func() { b.Close() },
		}, nil
	}
	pool, err := openPool(ctx, cfg.Database.URL)
	if err != nil {
		return nil, err
	}
	if err := checkMigrations(ctx, pool, migrate, logf); err != nil {
		pool.Close()
		return nil, err
	}
	pg := pgstore.New(pool)
	pg.Logf = logf
	return &ledger{
		mode: "postgres", usage: pg, journal: pg, rules: pg, admin: pg, pool: pool,
		ping:  pg.Ping,
		close: pool.Close,
	}, nil
}

// openPool makes a pool; it connects lazily, so a database that is down
// does not stop the proxy from starting.
func openPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database.url: %w", redactErr(err, url))
	}
	pc.ConnConfig.ConnectTimeout = 5 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("database.url: %w", redactErr(err, url))
	}
	return pool, nil
}

// redactErr keeps a database URL's password out of an error.
func redactErr(err error, url string) error {
	pc, perr := pgxpool.ParseConfig(url)
	if perr != nil || pc.ConnConfig.Password == "" {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), pc.ConnConfig.Password, "xxxxx"))
}

func checkMigrations(ctx context.Context, pool *pgxpool.Pool, migrate bool, logf func(string, ...any)) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if migrate {
		applied, err := migrations.Apply(ctx, pool)
		if err != nil {
			return fmt.Errorf("--migrate: %w", err)
		}
		if len(applied) > 0 {
			logf("database: applied migrations %s", strings.Join(applied, ", "))
		}
		return nil
	}
	pending, err := migrations.Pending(ctx, pool)
	if err != nil {
		logf("database: cannot check migrations at start (%v); serving, ledger writes wait for the database", err)
		return nil
	}
	if len(pending) > 0 {
		return fmt.Errorf("database: migrations %s are not applied: run `gaia-proxy migrate --config FILE` or start with --migrate", strings.Join(pending, ", "))
	}
	return nil
}
