// Package pgstore is gaia-proxy's durable ledger on PostgreSQL (pgx): quota
// usage, violations, per-minute roll-ups, runtime rules, alerts and the
// audit log, in the schema of package migrations.
package pgstore

import (
	"github.com/jackc/pgx/v5/pgxpool"
)

// Store is the PostgreSQL ledger. Safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

// New returns a Store on pool, whose database the migrations have been
// applied to.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}
