package boltstore_test

import (
	"path/filepath"
	"testing"

	"github.com/gaia-proxy/gaia-proxy/quota/quotatest"
)

func TestJournal(t *testing.T) {
	quotatest.RunJournal(t, func(t *testing.T) quotatest.Journal {
		s := open(t, filepath.Join(t.TempDir(), "gaia.db"))
		t.Cleanup(func() { s.Close() })
		return s
	})
}
