package migrations

import (
	"context"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
)

func names(t *testing.T) []string {
	t.Helper()
	all, err := fs.Glob(FS, "*.sql")
	if err != nil || len(all) == 0 {
		t.Fatalf("embedded migrations: %v, %d files", err, len(all))
	}
	return all
}

func newPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// exists reports whether table exists in the pool's schema.
func exists(t *testing.T, pool *pgxpool.Pool, table string) bool {
	t.Helper()
	var ok bool
	if err := pool.QueryRow(context.Background(), "SELECT to_regclass($1) IS NOT NULL", table).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func recorded(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT name FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestApply(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.Pool(t)
	all := names(t)
	if got, err := Pending(ctx, pool); err != nil || !slices.Equal(got, all) {
		t.Fatalf("Pending on an empty schema: got %q, %v, want %q", got, err, all)
	}
	got, err := Apply(ctx, pool)
	if err != nil || !slices.Equal(got, all) {
		t.Fatalf("Apply: got %q, %v, want %q", got, err, all)
	}
	for _, table := range []string{"rate_limit_configs", "quota_usage", "violations", "usage_rollups",
		"alert_rules", "alerts", "audit_log", "reputation"} {
		if !exists(t, pool, table) {
			t.Errorf("table %s missing after Apply", table)
		}
	}
	if got, err := Apply(ctx, pool); err != nil || len(got) != 0 {
		t.Errorf("second Apply: got %q, %v, want nothing applied", got, err)
	}
	if got, err := Pending(ctx, pool); err != nil || len(got) != 0 {
		t.Errorf("Pending after Apply: got %q, %v, want none", got, err)
	}
	if got := recorded(t, pool); !slices.Equal(got, all) {
		t.Errorf("schema_migrations: got %q, want %q", got, all)
	}
}

// TestApplyConcurrent is replicas racing at start-up: each file is
// applied exactly once, by one of them.
func TestApplyConcurrent(t *testing.T) {
	t.Parallel()
	url := testenv.Schema(t)
	const replicas = 4
	var wg sync.WaitGroup
	results := make([][]string, replicas)
	errs := make([]error, replicas)
	for i := range replicas {
		pool := newPool(t, url)
		wg.Go(func() { results[i], errs[i] = Apply(context.Background(), pool) })
	}
	wg.Wait()
	var got []string
	for i := range replicas {
		if errs[i] != nil {
			t.Errorf("replica %d: %v", i, errs[i])
		}
		got = append(got, results[i]...)
	}
	slices.Sort(got)
	if all := names(t); !slices.Equal(got, all) {
		t.Errorf("applied by all replicas together: got %q, want each of %q once", got, all)
	}
	if got := recorded(t, newPool(t, url)); !slices.Equal(got, names(t)) {
		t.Errorf("schema_migrations: got %q, want %q", got, names(t))
	}
}

// TestLockPerSchema: Apply waits for the lock of its own schema only.
func TestLockPerSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	held, other := testenv.Pool(t), testenv.Pool(t)
	conn, err := held.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1, hashtext(current_schema()))", lockClass); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "SELECT pg_advisory_unlock_all()")

	if _, err := Apply(ctx, other); err != nil {
		t.Fatalf("Apply on another schema: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := Apply(short, held); err == nil {
		t.Fatal("Apply while another session holds the schema's lock: got nil error, want it to wait")
	}
	if exists(t, held, "schema_migrations") {
		t.Error("Apply created schema_migrations without the lock")
	}
}

func TestApplyBroken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.Pool(t)
	fsys := fstest.MapFS{
		"0001_a.sql": {Data: []byte("CREATE TABLE a (id int);")},
		"0002_b.sql": {Data: []byte("CREATE TABLE b (id int);\nSELECT nope FROM nowhere;\n")},
		"0003_c.sql": {Data: []byte("CREATE TABLE c (id int);")},
	}
	got, err := apply(ctx, pool, fsys)
	if err == nil || !strings.Contains(err.Error(), "migrations: 0002_b.sql: line 2: ") {
		t.Fatalf("Apply: got error %v, want one naming 0002_b.sql, line 2", err)
	}
	if !slices.Equal(got, []string{"0001_a.sql"}) {
		t.Errorf("Apply: got %q applied, want [0001_a.sql]", got)
	}
	for table, want := range map[string]bool{"a": true, "b": false, "c": false} {
		if exists(t, pool, table) != want {
			t.Errorf("table %s: exists=%v, want %v", table, !want, want)
		}
	}
	if got, err := pending(ctx, pool, fsys); err != nil || !slices.Equal(got, []string{"0002_b.sql", "0003_c.sql"}) {
		t.Errorf("Pending: got %q, %v, want [0002_b.sql 0003_c.sql]", got, err)
	}

	fsys["0002_b.sql"] = &fstest.MapFile{Data: []byte("CREATE TABLE b (id int);")}
	if got, err := apply(ctx, pool, fsys); err != nil || !slices.Equal(got, []string{"0002_b.sql", "0003_c.sql"}) {
		t.Errorf("Apply after the fix: got %q, %v, want [0002_b.sql 0003_c.sql]", got, err)
	}

	renamed := fstest.MapFS{"0001_renamed.sql": {Data: []byte("SELECT 1")}}
	if _, err := apply(ctx, pool, renamed); err == nil || !strings.Contains(err.Error(), "0001_renamed.sql: version 1 was applied as 0001_a.sql") {
		t.Errorf("Apply with a renamed file: got %v", err)
	}
}

func TestList(t *testing.T) {
	for _, tc := range []struct {
		name string
		fsys fstest.MapFS
		want string
	}{
		{"no version", fstest.MapFS{"init.sql": {}}, "migrations: init.sql: name must be NNNN_name.sql"},
		{"zero", fstest.MapFS{"0000_x.sql": {}}, "migrations: 0000_x.sql: name must be NNNN_name.sql"},
		{"duplicate", fstest.MapFS{"01_a.sql": {}, "1_b.sql": {}}, "migrations: 1_b.sql: version 1 already used by 01_a.sql"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := list(tc.fsys)
			if err == nil || err.Error() != tc.want {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := list(FS); err != nil {
		t.Errorf("embedded migrations: %v", err)
	}
}

// TestApplyMissingSchema: a search_path naming no schema that exists is
// named in the error, rather than PostgreSQL's "no schema has been
// selected to create in".
func TestApplyMissingSchema(t *testing.T) {
	base := testenv.DatabaseURL(t)
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	pool, err := pgxpool.New(context.Background(), base+sep+"search_path=no_such_schema_here")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := Apply(context.Background(), pool); err == nil || !strings.Contains(err.Error(), "search_path (no_such_schema_here) names no schema that exists") {
		t.Errorf("Apply with a missing schema: %v, want the search_path named", err)
	}
}
