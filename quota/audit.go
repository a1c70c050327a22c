package quota

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// AuditEntry is one change made through the admin API, as
// quota/pgstore and quota/boltstore keep them.
//
// Key is the entry's idempotency key: made once, with the entry, by
// NewAuditEntry (or by Journal.Audit for an entry that has none), and
// carried unchanged through the journal's queue and its retries. A store
// keeps one entry per key, so a write retried after its answer was lost
// stores the entry once, while two changes alike in every other field
// (the same actor, action, subject and detail in the same microsecond)
// are two entries. An entry with an empty Key is stored each time it is
// written (see AuditStore).
type AuditEntry struct {
	ID      int64           `json:"id"`
	Key     string          `json:"key,omitempty"` // idempotency key; see above
	At      time.Time       `json:"at"`
	Actor   string          `json:"actor"`
	Action  string          `json:"action"`            // "rule.put", "quota.reset", ...
	Subject string          `json:"subject,omitempty"` // what it was done to
	Detail  json.RawMessage `json:"detail"`            // a JSON object; {} when none
}

// NewAuditKey returns a new idempotency key for an AuditEntry: 16
// random bytes in hex.
func NewAuditKey() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// maxAuditKey bounds the bytes of an AuditEntry's Key as the stores get
// it: a longer one (or one that is not clean UTF-8 without NUL) is
// replaced by its SHA-256 in hex, which PostgreSQL's unique index takes.
const maxAuditKey = 128

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
// at, with detail as in AuditDetail and a new Key (NewAuditKey); the
// store gives its ID.
func NewAuditEntry(at time.Time, actor, action, subject string, detail any) (AuditEntry, error) {
	d, err := AuditDetail(detail)
	if err != nil {
		return AuditEntry{}, fmt.Errorf("quota: audit %s: detail: %w", action, err)
	}
	return AuditEntry{Key: NewAuditKey(), At: at.UTC().Truncate(time.Microsecond), Actor: actor, Action: action, Subject: subject, Detail: d}, nil
}

// AuditStore is where a Journal writes audit entries (see
// Journal.Audit): quota/pgstore and quota/boltstore implement it next to
// JournalStore.
type AuditStore interface {
	// WriteAudit stores entries in order, each with its At; the store
	// gives the IDs. A write that fails stores none of them. An entry
	// whose Key is that of one stored, or of one before it in entries,
	// is skipped, even while the write that stores the other has not
	// committed yet: a write retried after its answer was lost
	// (PostgreSQL) stores each entry once. An entry with an empty Key
	// is always stored.
	WriteAudit(ctx context.Context, entries []AuditEntry) error
}

// cleanAudit returns e as the stores get it: a Key (new when empty; see
// maxAuditKey), strings cleaned as a violation's, a detail PostgreSQL's
// jsonb takes (valid JSON, no NUL), At in UTC to the microsecond, now
// when zero. An entry the store would refuse for its content would
// otherwise be retried forever.
func cleanAudit(e AuditEntry, now func() time.Time) AuditEntry {
	switch {
	case e.Key == "":
		e.Key = NewAuditKey()
	case len(e.Key) > maxAuditKey || !utf8.ValidString(e.Key) || strings.IndexByte(e.Key, 0) >= 0:
		sum := sha256.Sum256([]byte(e.Key))
		e.Key = hex.EncodeToString(sum[:])
	}
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
