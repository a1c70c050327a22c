// Package pgstore is gaia-proxy's durable ledger on PostgreSQL (pgx): quota
// usage, violations, per-minute roll-ups, runtime rules, alerts and the
// audit log, in the schema of package migrations.
package pgstore

import (
	"context"
	"fmt"
	"log"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

// Store is the PostgreSQL ledger. Safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool

	// Logf receives operational logs (the rules watcher losing its
	// connection). Nil means log.Printf. Set it before using the Store.
	Logf func(format string, args ...any)
}

var _ quota.Store = (*Store)(nil)

// New returns a Store on pool, whose database the migrations have been
// applied to. Tables are used unqualified, so the pool's search_path
// chooses the schema.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}

// Ping checks that the database answers, for health checks.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("pgstore: ping: %w", err)
	}
	return nil
}

func (s *Store) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
		return
	}
	log.Printf(format, args...)
}
