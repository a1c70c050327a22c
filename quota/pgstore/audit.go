package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// AuditEntry is one change made through the admin API.
type AuditEntry struct {
	ID      int64           `json:"id"`
	At      time.Time       `json:"at"`
	Actor   string          `json:"actor"`
	Action  string          `json:"action"`            // "rule.put", "quota.reset", ...
	Subject string          `json:"subject,omitempty"` // what it was done to
	Detail  json.RawMessage `json:"detail"`            // a JSON object; {} when none
}

// maxAuditLog is the most entries AuditLog returns at once.
const maxAuditLog = 1000

// Audit records that actor did action to subject, with detail (anything
// encoding/json can marshal; nil means none) as its JSON.
func (s *Store) Audit(ctx context.Context, actor, action, subject string, detail any) error {
	d := []byte("{}")
	if detail != nil {
		var err error
		if d, err = json.Marshal(detail); err != nil {
			return fmt.Errorf("pgstore: audit %s: detail: %w", action, err)
		}
	}
	_, err := s.pool.Exec(ctx, "INSERT INTO audit_log (actor, action, subject, detail) VALUES ($1, $2, $3, $4)",
		actor, action, subject, d)
	if err != nil {
		return fmt.Errorf("pgstore: audit %s: %w", action, err)
	}
	return nil
}

// AuditLog returns the latest limit entries of the audit log, newest
// first. A limit below 1 or above 1000 means 1000.
func (s *Store) AuditLog(ctx context.Context, limit int) ([]AuditEntry, error) {
	if limit < 1 || limit > maxAuditLog {
		limit = maxAuditLog
	}
	rows, err := s.pool.Query(ctx, "SELECT id, at, actor, action, subject, detail FROM audit_log ORDER BY id DESC LIMIT $1", limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read audit log: %w", err)
	}
	entries, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AuditEntry, error) {
		var e AuditEntry
		err := row.Scan(&e.ID, &e.At, &e.Actor, &e.Action, &e.Subject, &e.Detail)
		e.At = e.At.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: read audit log: %w", err)
	}
	return entries, nil
}
