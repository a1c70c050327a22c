package admin_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

// awayAudit is a backend whose audit log cannot be written while away
// is set, as when the database went away after the change was made.
type awayAudit struct {
	backend
	away atomic.Bool
}

func (s *awayAudit) WriteAudit(ctx context.Context, es []quota.AuditEntry) error {
	if s.away.Load() {
		return errors.New("database away")
	}
	return s.backend.(quota.AuditStore).WriteAudit(ctx, es)
}

// TestAuditedWhenStoreReturns: every audited change (rule.put,
// rule.delete, quota.reset) made while the audit log cannot be written
// is answered as usual, and its entry lands, in order, once the store
// takes writes again (SPEC §5).
func TestAuditedWhenStoreReturns(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *apiEnv) {
		s := &awayAudit{backend: e.store}
		e.journal = quota.NewJournal(s, &quota.JournalOptions{Replica: "test", Now: e.clock.Now, Logf: t.Logf})
		e.srv = newServer(e)

		s.away.Store(true)
		var created ruleJSON
		want(t, e.post("/api/admin/quotas/config", `{"subject":"user:carol","rate":[]}`), http.StatusCreated).decode(t, &created)
		want(t, e.do("DELETE", "/api/admin/quotas/config/"+created.ID, nil), http.StatusNoContent)
		want(t, e.post("/api/admin/quotas/reset", `{"subject":"key:acme-prod"}`), http.StatusOK)
		if n := len(e.audits()); n != 0 {
			t.Fatalf("%d audit entries written while away", n)
		}
		if st := e.journal.Stats(); st.PendingAudits != 3 {
			t.Errorf("%d audit entries queued, want 3", st.PendingAudits)
		}
		if err := e.journal.Flush(e.ctx); err == nil {
			t.Error("Flush while away: nil error")
		}

		s.away.Store(false)
		if err := e.journal.Flush(e.ctx); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range e.audits() {
			got = append(got, a.Action+" "+a.Subject)
		}
		if g, w := strings.Join(got, ", "), "quota.reset key:acme-prod, rule.delete user:carol, rule.put user:carol"; g != w {
			t.Errorf("audit log after the store's return: got %s, want %s", g, w)
		}
	})
}
