package boltstore_test

import (
	"testing"

	"github.com/gaia-proxy/gaia-proxy/quota/quotatest"
)

func TestJournal(t *testing.T) {
	quotatest.RunJournal(t, func(t *testing.T) quotatest.Journal { return temp(t) })
}
