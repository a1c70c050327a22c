package pgstore_test

import (
	"context"
	"io/fs"
	"testing"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/gaia-proxy/gaia-proxy/migrations"
	"github.com/gaia-proxy/gaia-proxy/quota/pgstore"
	"github.com/gaia-proxy/gaia-proxy/quota/quotatest"
)

// newJournalStore returns a Store on a fresh schema with the migrations
// executed in file-name order.
func newJournalStore(t *testing.T) *pgstore.Store {
	t.Helper()
	pool := testenv.Pool(t)
	files, err := fs.Glob(migrations.FS, "*.sql") // sorted
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		sql, err := fs.ReadFile(migrations.FS, f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(context.Background(), string(sql)); err != nil {
			t.Fatalf("migration %s: %v", f, err)
		}
	}
	return pgstore.New(pool)
}

func TestJournal(t *testing.T) {
	quotatest.RunJournal(t, func(t *testing.T) quotatest.Journal { return newJournalStore(t) })
}
