package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

// Audit records that actor did action to subject, with detail (anything
// encoding/json can marshal; nil means none) as its JSON.
func (s *Store) Audit(ctx context.Context, actor, action, subject string, detail any) error {
	d, err := quota.AuditDetail(detail)
	if err != nil {
		return fmt.Errorf("pgstore: audit %s: detail: %w", action, err)
	}
	_, err = s.pool.Exec(ctx, "INSERT INTO audit_log (actor, action, subject, detail) VALUES ($1, $2, $3, $4)",
		actor, action, subject, d)
	if err != nil {
		return fmt.Errorf("pgstore: audit %s: %w", action, err)
	}
	return nil
}

// WriteAudit stores entries in one statement, in order, each with its
// At and its Key (column entry_key, unique; NULL when empty). An entry
// whose Key is stored already, or comes earlier in entries, is skipped:
// a write retried after its answer was lost, even while the first is
// still uncommitted (the insert waits for it), stores it once. See
// quota.AuditStore.
func (s *Store) WriteAudit(ctx context.Context, entries []quota.AuditEntry) error {
	if len(entries) == 0 {
		return nil
	}
	n := len(entries)
	keys, ats, actors, actions, subjects, details := make([]string, n), make([]time.Time, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, e := range entries {
		keys[i], ats[i], actors[i], actions[i], subjects[i], details[i] = e.Key, e.At, e.Actor, e.Action, e.Subject, string(e.Detail)
		if len(e.Detail) == 0 {
			details[i] = "{}"
		}
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO audit_log (entry_key, at, actor, action, subject, detail)
		SELECT NULLIF(e.key, ''), e.at, e.actor, e.action, e.subject, e.detail::jsonb
		FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY
			AS e(key, at, actor, action, subject, detail, n)
		ORDER BY e.n
		ON CONFLICT (entry_key) DO NOTHING`,
		keys, ats, actors, actions, subjects, details)
	if err != nil {
		return fmt.Errorf("pgstore: write %d audit entries: %w", n, err)
	}
	return nil
}

// AuditLog returns the latest limit entries of the audit log, newest
// first. A limit below 1 or above 1000 means 1000.
func (s *Store) AuditLog(ctx context.Context, limit int) ([]quota.AuditEntry, error) {
	if limit < 1 || limit > quota.MaxAuditLog {
		limit = quota.MaxAuditLog
	}
	rows, err := s.pool.Query(ctx, "SELECT id, coalesce(entry_key, ''), at, actor, action, subject, detail FROM audit_log ORDER BY id DESC LIMIT $1", limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read audit log: %w", err)
	}
	entries, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (quota.AuditEntry, error) {
		var e quota.AuditEntry
		err := row.Scan(&e.ID, &e.Key, &e.At, &e.Actor, &e.Action, &e.Subject, &e.Detail)
		e.At = e.At.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: read audit log: %w", err)
	}
	return entries, nil
}
