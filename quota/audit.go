package quota

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// AuditEntry is one change made through the admin API, as
// quota/pgstore and quota/boltstore keep them.
type AuditEntry struct {
	ID      int64           `json:"id"`
	At      time.Time       `json:"at"`
	Actor   string          `json:"actor"`
	Action  string          `json:"action"`            // "rule.put", "quota.reset", ...
	Subject string          `json:"subject,omitempty"` // what it was done to
	Detail  json.RawMessage `json:"detail"`            // a JSON object; {} when none
}

// MaxAuditLog is the most entries a store's AuditLog returns at once.
const MaxAuditLog = 1000

// AuditDetail returns the JSON of an audit entry's detail: anything
// encoding/json can marshal, nil meaning none ({}).
func AuditDetail(detail any) (json.RawMessage, error) {
	if detail == nil {
		return json.RawMessage("{}"), nil
	}
	return json.Marshal(detail)
}

// NewAuditEntry returns the entry of a change actor made to subject at
// at, with detail as in AuditDetail; the store gives its ID.
func NewAuditEntry(at time.Time, actor, action, subject string, detail any) (AuditEntry, error) {
	d, err := AuditDetail(detail)
	if err != nil {
		return AuditEntry{}, fmt.Errorf("quota: audit %s: detail: %w", action, err)
	}
	return AuditEntry{At: at.UTC().Truncate(time.Microsecond), Actor: actor, Action: action, Subject: subject, Detail: d}, nil
}

// AuditStore is where a Journal writes audit entries (see
// Journal.Audit): quota/pgstore and quota/boltstore implement it next to
// JournalStore.
type AuditStore interface {
	// WriteAudit stores entries in order, each with its At; the store
	// gives the IDs. A write that fails stores none of them. Where a
	// write can fail after its commit (PostgreSQL: the answer lost), an
	// entry equal to one stored (At, Actor, Action, Subject and Detail)
	// is skipped, so a retried write stores each entry once.
	WriteAudit(ctx context.Context, entries []AuditEntry) error
}

// cleanAudit returns e as the stores get it: strings cleaned as a
// violation's, a detail PostgreSQL's jsonb takes (valid JSON, no NUL),
// At in UTC to the microsecond, now when zero. An entry the store would
// refuse for its content would otherwise be retried forever.
func cleanAudit(e AuditEntry, now func() time.Time) AuditEntry {
	if e.At.IsZero() {
		e.At = now()
	}
	e.At = e.At.UTC().Truncate(time.Microsecond)
	e.Actor, e.Action, e.Subject = clean(e.Actor), clean(e.Action), clean(e.Subject)
	switch {
	case len(e.Detail) == 0:
		e.Detail = json.RawMessage("{}")
	case !json.Valid(e.Detail):
		e.Detail, _ = json.Marshal(map[string]string{"invalid_detail": clean(string(e.Detail))})
	case bytes.Contains(e.Detail, []byte(`\u0000`)):
		var v any
		json.Unmarshal(e.Detail, &v) // valid: checked above
		e.Detail, _ = json.Marshal(noNUL(v))
	}
	return e
}

// noNUL returns v, a value decoded by encoding/json, with NUL removed
// from its strings and keys.
func noNUL(v any) any {
	switch v := v.(type) {
	case string:
		return strings.ReplaceAll(v, "\x00", "")
	case []any:
		for i := range v {
			v[i] = noNUL(v[i])
		}
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[strings.ReplaceAll(k, "\x00", "")] = noNUL(x)
		}
		return m
	}
	return v
}
