package migrations

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// lockClass is the first half of the advisory lock key ("gaia" in
// ASCII); the second half is a hash of the current schema, so deployments
// (and tests) in different schemas of one database do not wait on each
// other, while replicas sharing a schema serialise.
const lockClass = 0x67616961

// createTable records applied migrations. It is not a migration itself:
// Apply creates it, under the lock, before reading it.
const createTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version     bigint PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)`

// migration is one file of the FS.
type migration struct {
	version int64
	name    string // file name, "0001_rate_limiting.sql"
}

// Apply applies the migrations of FS that the database behind pool has
// not recorded yet, in file-name order, and returns the names of those it
// applied. Each file runs in its own transaction, which also records its
// version, name and time in table schema_migrations; tables are created
// in the connection's current schema (its search_path).
//
// Apply holds a PostgreSQL advisory lock, keyed by the current schema, on
// one connection the whole time, so replicas racing to migrate take
// turns: the first applies, the others find nothing left to do. If a file
// fails, Apply stops there with an error naming it; the files before it
// stay applied.
func Apply(ctx context.Context, pool *pgxpool.Pool) (applied []string, err error) {
	return apply(ctx, pool, FS)
}

// Pending returns the names of the migrations of FS that the database
// behind pool has not recorded, in the order Apply would apply them. It
// changes nothing (gaia-proxy check).
func Pending(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	return pending(ctx, pool, FS)
}

func apply(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS) (applied []string, err error) {
	all, err := list(fsys)
	if err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrations: connect: %w", err)
	}
	defer conn.Release()
	var schema *string
	var path string
	if err := conn.QueryRow(ctx, "SELECT current_schema(), current_setting('search_path')").Scan(&schema, &path); err != nil {
		return nil, fmt.Errorf("migrations: connect: %w", err)
	}
	if schema == nil {
		return nil, fmt.Errorf("migrations: the connection's search_path (%s) names no schema that exists: create it (CREATE SCHEMA) or set search_path in the database URL", path)
	}
	var key int32 // computed once: a migration may change search_path
	err = conn.QueryRow(ctx, "SELECT hashtext(coalesce(current_schema(), ''))").Scan(&key)
	if err == nil {
		_, err = conn.Exec(ctx, "SELECT pg_advisory_lock($1, $2)", lockClass, key)
	}
	if err != nil {
		return nil, fmt.Errorf("migrations: advisory lock: %w", err)
	}
	defer func() {
		// ctx may be over; a session lock outlives the query that failed.
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, uerr := conn.Exec(uctx, "SELECT pg_advisory_unlock($1, $2)", lockClass, key); uerr != nil {
			conn.Hijack().Close(uctx) // closing the session releases the lock
		}
	}()
	if _, err := conn.Exec(ctx, createTable); err != nil {
		return nil, fmt.Errorf("migrations: create schema_migrations: %w", err)
	}
	todo, err := unapplied(ctx, conn.Conn(), all)
	if err != nil {
		return nil, err
	}
	for _, m := range todo {
		sql, err := fs.ReadFile(fsys, m.name)
		if err != nil {
			return applied, fmt.Errorf("migrations: %s: %w", m.name, err)
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return withLine(err, string(sql))
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("migrations: %s: %w", m.name, err)
		}
		applied = append(applied, m.name)
	}
	return applied, nil
}

func pending(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS) ([]string, error) {
	all, err := list(fsys)
	if err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrations: connect: %w", err)
	}
	defer conn.Release()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return nil, fmt.Errorf("migrations: read schema_migrations: %w", err)
	}
	todo := all
	if exists {
		if todo, err = unapplied(ctx, conn.Conn(), all); err != nil {
			return nil, err
		}
	}
	names := make([]string, len(todo))
	for i, m := range todo {
		names[i] = m.name
	}
	return names, nil
}

// list returns the *.sql files of fsys in name order. Each name must start
// with a version number and an underscore ("0001_name.sql"), each version
// used once.
func list(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "*.sql") // sorted
	if err != nil {
		return nil, fmt.Errorf("migrations: list: %w", err)
	}
	all := make([]migration, 0, len(names))
	seen := map[int64]string{}
	for _, name := range names {
		num, _, ok := strings.Cut(path.Base(name), "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("migrations: %s: name must be NNNN_name.sql", name)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations: %s: version %d already used by %s", name, v, other)
		}
		seen[v] = name
		all = append(all, migration{version: v, name: name})
	}
	return all, nil
}

// unapplied returns the migrations of all that schema_migrations does not
// record. A recorded version under another file name is an error: the
// files and the database disagree on what was applied.
func unapplied(ctx context.Context, conn *pgx.Conn, all []migration) ([]migration, error) {
	rows, err := conn.Query(ctx, "SELECT version, name FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("migrations: read schema_migrations: %w", err)
	}
	done := map[int64]string{}
	var v int64
	var name string
	_, err = pgx.ForEachRow(rows, []any{&v, &name}, func() error { done[v] = name; return nil })
	if err != nil {
		return nil, fmt.Errorf("migrations: read schema_migrations: %w", err)
	}
	var todo []migration
	for _, m := range all {
		switch name, ok := done[m.version]; {
		case !ok:
			todo = append(todo, m)
		case name != m.name:
			return nil, fmt.Errorf("migrations: %s: version %d was applied as %s", m.name, m.version, name)
		}
	}
	return todo, nil
}

// withLine adds the line of a PostgreSQL error's position in sql.
func withLine(err error, sql string) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Position < 1 {
		return err
	}
	runes := []rune(sql)
	pos := min(int(pe.Position), len(runes))
	line := 1 + strings.Count(string(runes[:pos-1]), "\n")
	return fmt.Errorf("line %d: %w", line, err)
}
