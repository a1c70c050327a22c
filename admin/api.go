package admin

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// Limiter is the hot path as the admin API uses it; *limiter.Limiter
// implements it.
type Limiter interface {
	// Decide with cost 0 reads usage without charging it.
	Decide(ctx context.Context, limits []limiter.Limit, cost int64) (limiter.Decision, error)
	// Reset clears rate windows and sets quota usage to zero, in the hot
	// path and the ledger.
	Reset(ctx context.Context, limits []limiter.Limit) error
}

// Store is the durable side of the admin API: quota/pgstore and
// quota/boltstore implement it, with the semantics quota/quotatest
// checks.
type Store interface {
	// Rules, PutRule and DeleteRule keep the runtime rules, one per
	// subject.
	Rules(ctx context.Context, loc *time.Location) ([]limiter.Rule, error)
	PutRule(ctx context.Context, r limiter.Rule) (limiter.Rule, error)
	DeleteRule(ctx context.Context, id string) (bool, error)
	// Audit records a change made through the API.
	Audit(ctx context.Context, actor, action, subject string, detail any) error
	// PeriodUsage returns every ledger counter of a period that started
	// at one of starts.
	PeriodUsage(ctx context.Context, starts []time.Time) ([]limiter.CounterValue, error)
	// Violations and Rollups read the journal (see quota.JournalReader).
	Violations(ctx context.Context, q quota.ViolationQuery) ([]quota.Violation, string, error)
	Rollups(ctx context.Context, from, to time.Time) ([]quota.Rollup, error)
}

// How long one call of an admin API request to the store may take. A
// database that hangs (it takes connections and answers nothing) would
// otherwise hold the request, its goroutine and a pooled connection until
// the client gives up, and the config page would never show its fallback.
// Past the bound the config page answers the rules in force here, with a
// warning, and the other endpoints a 503 database_unavailable. The live
// stream is not bounded: it runs as long as its client stays. Variables
// for tests.
var (
	// storeTime bounds a call that reads or writes a few rows: the
	// runtime rules, a page of violations, an audit entry.
	storeTime = 5 * time.Second
	// scanTime bounds a call that may read many rows: the roll-ups of an
	// analytics range (up to 10,000 buckets), the ledger's counters of the
	// current periods (one per subject using a quota).
	scanTime = 30 * time.Second
)

// storeSlow is the cause of a store call's context ending at its bound:
// the store did not answer within it.
type storeSlow time.Duration

func (d storeSlow) Error() string {
	return fmt.Sprintf("the database did not answer within %v", time.Duration(d))
}

// storeContext returns a context for one call to the store, ending d
// from now (or with ctx, the request's).
func storeContext(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, d, storeSlow(d))
}

// storeError answers err, which a store call made with ctx (of
// storeContext) returned while doing what: a 503 database_unavailable
// when the store did not answer in time, else a 500 (see internal).
func storeError(ctx context.Context, what string, err error) error {
	var slow storeSlow
	if !errors.As(context.Cause(ctx), &slow) {
		return internal(what, err)
	}
	return &apiError{Status: http.StatusServiceUnavailable, Code: "database_unavailable",
		Message: fmt.Sprintf("%s: %v; try again later", what, slow), Err: err}
}

// Auditor records audit entries, queueing those the store cannot take
// at once and writing them when it can: *quota.Journal implements it.
type Auditor interface {
	// Audit writes or queues e; an error means e is not recorded.
	Audit(ctx context.Context, e quota.AuditEntry) error
}

// needPolicy returns the policy in force, or a 501 without one.
func (s *Server) needPolicy() (*limiter.Policy, error) {
	var p *limiter.Policy
	if s.policy != nil {
		p = s.policy()
	}
	if p == nil {
		return nil, unavailable("the policy")
	}
	return p, nil
}

// needStore returns a 501 without a store.
func (s *Server) needStore() error {
	if s.store == nil {
		return unavailable("the durable store")
	}
	return nil
}

// actor names who made a change, for the audit log: "admin" and the
// peer's address.
func actor(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "admin@" + host
}

// audit records a change that was made (SPEC §5: every admin change is
// audited). With an Auditor, an entry the store cannot take now is
// queued and lands when it returns; without one it goes to Store.Audit.
// A failure is logged, not answered: the change itself was made, and
// the client retrying it would make it twice.
func (s *Server) audit(r *http.Request, action, subject string, detail any) {
	who := actor(r)
	var err error
	if s.auditor != nil {
		var e quota.AuditEntry
		if e, err = quota.NewAuditEntry(s.now(), who, action, subject, detail); err == nil {
			err = s.auditor.Audit(r.Context(), e)
		}
	} else {
		ctx, cancel := storeContext(r.Context(), storeTime)
		err = s.store.Audit(ctx, who, action, subject, detail)
		cancel()
	}
	if err != nil {
		s.logf("admin: AUDIT ENTRY LOST: %s %s by %s was made but not recorded: %v", action, subject, who, err)
	}
}

// resolve finds the caller a subject string names, for usage and reset:
// "key:<id>", "user:<id>" or "ip:<address>". An unknown key is a 404.
func resolve(pol *limiter.Policy, field, subject string) (limiter.Subject, error) {
	if err := notSecret(pol, field, subject); err != nil {
		return limiter.Subject{}, err
	}
	kind, id, _ := strings.Cut(subject, ":")
	switch {
	case id == "":
	case kind == "key":
		if sub, ok := pol.KeyByID(id); ok {
			return sub, nil
		}
		return limiter.Subject{}, notFoundError("%s: key %q is not configured", field, short(id))
	case kind == "user":
		return pol.ForUser(id), nil
	case kind == "ip":
		if a, err := netip.ParseAddr(id); err == nil {
			return pol.ForIP(limiter.ClientKey(a)), nil
		}
		if n, err := netip.ParsePrefix(id); err == nil && n.Addr().Is6() && n.Bits() == 64 {
			return pol.ForIP(limiter.ClientKey(n.Addr())), nil // as subjects list IPv6 callers
		}
		return limiter.Subject{}, badRequest("%s: %q is not an IP address (or an IPv6 /64)", field, short(id))
	}
	return limiter.Subject{}, badRequest("%s: must be key:<id>, user:<id> or ip:<address>, got %q", field, short(subject))
}

// notSecret refuses a subject that is, or ends in, an API key's secret
// (pasted instead of the key's id), without repeating it: the API never
// shows a secret, not even back to its sender.
func notSecret(pol *limiter.Policy, field, subject string) error {
	_, id, _ := strings.Cut(subject, ":")
	for _, s := range []string{subject, id} {
		if _, ok := pol.LookupKey(sha256.Sum256([]byte(s))); ok && s != "" {
			return badRequest("%s: that is an API key's secret, not a key's id; never send secrets to the admin API", field)
		}
	}
	return nil
}
