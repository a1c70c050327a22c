package pgstore

import (
	"context"
	"fmt"

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

// AuditLog returns the latest limit entries of the audit log, newest
// first. A limit below 1 or above 1000 means 1000.
func (s *Store) AuditLog(ctx context.Context, limit int) ([]quota.AuditEntry, error) {
	if limit < 1 || limit > quota.MaxAuditLog {
		limit = quota.MaxAuditLog
	}
	rows, err := s.pool.Query(ctx, "SELECT id, at, actor, action, subject, detail FROM audit_log ORDER BY id DESC LIMIT $1", limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read audit log: %w", err)
	}
	entries, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (quota.AuditEntry, error) {
		var e quota.AuditEntry
		err := row.Scan(&e.ID, &e.At, &e.Actor, &e.Action, &e.Subject, &e.Detail)
		e.At = e.At.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: read audit log: %w", err)
	}
	return entries, nil
}
