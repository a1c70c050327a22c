package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// RulesChannel is the channel every change of rate_limit_configs is
// announced on, with the schema's name as payload (NOTIFY is
// database-wide; deployments in other schemas ignore it).
const RulesChannel = "gaia_rules"

// notifyRules runs in the transaction of each change, so the notice is
// sent if and only if the change commits.
const notifyRules = "SELECT pg_notify('" + RulesChannel + "', coalesce(current_schema(), ''))"

// watchRetry is how long WatchRules waits before reconnecting.
const watchRetry = time.Second

const putRule = `
INSERT INTO rate_limit_configs (id, subject, rate, quota, expires_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (subject) DO UPDATE
SET rate = excluded.rate, quota = excluded.quota, expires_at = excluded.expires_at, updated_at = now()
RETURNING id`

// Rules returns every runtime rule, ordered by subject, expired ones
// included (a Policy ignores those). Quota periods are calendars in loc;
// nil means UTC.
func (s *Store) Rules(ctx context.Context, loc *time.Location) ([]limiter.Rule, error) {
	rows, err := s.pool.Query(ctx, "SELECT id, subject, rate, quota, expires_at FROM rate_limit_configs ORDER BY subject")
	if err != nil {
		return nil, fmt.Errorf("pgstore: read rules: %w", err)
	}
	var (
		rules        []limiter.Rule
		r            limiter.Rule
		rate, quotas []byte
		expires      *time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&r.ID, &r.Subject, &rate, &quotas, &expires}, func() error {
		var err error
		if r.Limits.Rate, err = quota.DecodeLimits("rate", rate, loc); err != nil {
			return fmt.Errorf("rule %s (%s): %w", r.ID, r.Subject, err)
		}
		if r.Limits.Quota, err = quota.DecodeLimits("quota", quotas, loc); err != nil {
			return fmt.Errorf("rule %s (%s): %w", r.ID, r.Subject, err)
		}
		r.ExpiresAt = time.Time{}
		if expires != nil {
			r.ExpiresAt = expires.UTC()
		}
		rules = append(rules, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: read rules: %w", err)
	}
	return rules, nil
}

// PutRule creates the rule of r.Subject, or replaces its limits and
// expiry if it exists, and returns the rule as stored, with its id (new
// ones get "rule_" and 16 hex digits; r.ID is not used). Subjects are
// "key:<id>", "user:<id>" or "plan:<name>". A nil list inherits, an
// empty one means no limits. Invalid rules are refused with an error
// wrapping quota.ErrInvalid. Every replica's WatchRules hears of the change.
func (s *Store) PutRule(ctx context.Context, r limiter.Rule) (limiter.Rule, error) {
	rate, quotas, err := quota.EncodeRule(r)
	if err != nil {
		return limiter.Rule{}, fmt.Errorf("pgstore: put rule %q: %w", r.Subject, err)
	}
	var expires *time.Time
	if !r.ExpiresAt.IsZero() {
		r.ExpiresAt = r.ExpiresAt.Truncate(time.Microsecond).UTC() // as stored
		expires = &r.ExpiresAt
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, putRule, quota.NewRuleID(), r.Subject, rate, quotas, expires).Scan(&r.ID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, notifyRules)
		return err
	})
	if err != nil {
		return limiter.Rule{}, fmt.Errorf("pgstore: put rule %q: %w", r.Subject, err)
	}
	return r, nil
}

// DeleteRule removes the rule with id and reports whether there was one.
func (s *Store) DeleteRule(ctx context.Context, id string) (bool, error) {
	deleted := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "DELETE FROM rate_limit_configs WHERE id = $1", id)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		_, err = tx.Exec(ctx, notifyRules)
		deleted = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("pgstore: delete rule %q: %w", id, err)
	}
	return deleted, nil
}

// WatchRules calls onChange whenever a rule changes, through any Store
// on the same database and schema, until ctx ends; then it returns nil.
// It listens on its own connection and reconnects by itself after a
// second when it loses it. It also calls onChange each time it has
// (re)connected, the first time included, since changes made while it
// was away went unheard: a caller reloads with Rules in onChange and
// needs no separate initial load. onChange runs on the watcher's
// goroutine; it should be quick (signal a channel, not reload inline).
func (s *Store) WatchRules(ctx context.Context, onChange func()) error {
	cfg := s.pool.Config().ConnConfig // the pool's, search_path included
	h := &rulesHandler{onChange: onChange}
	l := &pgxlisten.Listener{
		Connect: func(ctx context.Context) (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, cfg.Copy()) },
		LogError: func(ctx context.Context, err error) {
			if ctx.Err() == nil && !h.failing { // once per outage
				h.failing = true
				s.logf("pgstore: watch rules: %v (retrying every %s)", err, watchRetry)
			}
		},
		ReconnectDelay: watchRetry,
	}
	l.Handle(RulesChannel, h)
	err := l.Listen(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("pgstore: watch rules: %w", err)
}

// rulesHandler passes on the notifications of its own schema. Listen
// calls it, and the LogError above, from one goroutine.
type rulesHandler struct {
	onChange func()
	schema   string
	failing  bool
}

// HandleBacklog runs on each new connection once it listens: it learns
// the connection's schema and reports a change, since notifications sent
// before were missed.
func (h *rulesHandler) HandleBacklog(ctx context.Context, _ string, conn *pgx.Conn) error {
	err := conn.QueryRow(ctx, "SELECT coalesce(current_schema(), '')").Scan(&h.schema)
	if err == nil {
		h.failing = false
	}
	h.onChange()
	return err
}

// HandleNotification reports a change made in the handler's schema.
func (h *rulesHandler) HandleNotification(_ context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	if n.Payload == h.schema {
		h.onChange()
	}
	return nil
}
