package pgstore_test

import (
	"testing"

	"github.com/gaia-proxy/gaia-proxy/quota/quotatest"
)

func TestAudit(t *testing.T) {
	quotatest.RunAudit(t, func(t *testing.T) quotatest.Audit { return pgStore(t) })
}
