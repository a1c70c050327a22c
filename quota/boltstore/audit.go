package boltstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

// auditBucket holds the audit log: key = the entry's ID (the bucket's
// sequence, 8 bytes big-endian), so a reverse scan is newest first;
// value = the quota.AuditEntry in JSON.
const auditBucket = "audit_log"

// auditKeysBucket indexes the audit log by idempotency key: key = an
// entry's quota.AuditEntry.Key, value = its ID (8 bytes big-endian).
// Entries with an empty Key are not in it. WriteAudit creates it on its
// first write.
const auditKeysBucket = "audit_keys"

// Audit records that actor did action to subject, with detail (anything
// encoding/json can marshal; nil means none) as its JSON.
func (s *Store) Audit(ctx context.Context, actor, action, subject string, detail any) error {
	d, err := quota.AuditDetail(detail)
	if err != nil {
		return fmt.Errorf("boltstore: audit %s: detail: %w", action, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltstore: audit %s: %w", action, err)
	}
	err = s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(auditBucket))
		id, err := b.NextSequence()
		if err != nil {
			return err
		}
		e := quota.AuditEntry{ID: int64(id), At: time.Now().UTC().Truncate(time.Microsecond),
			Actor: actor, Action: action, Subject: subject, Detail: d}
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		return b.Put(binary.BigEndian.AppendUint64(nil, id), v)
	})
	if err != nil {
		return fmt.Errorf("boltstore: audit %s: %w", action, err)
	}
	return nil
}

// WriteAudit stores entries in one transaction, in order, each with its
// At. An entry whose Key is in auditKeysBucket, stored before or earlier
// in entries, is skipped; one with an empty Key is always stored. A
// failed write stores none of them. See quota.AuditStore.
func (s *Store) WriteAudit(ctx context.Context, entries []quota.AuditEntry) error {
	if len(entries) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltstore: write %d audit entries: %w", len(entries), err)
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(auditBucket))
		keys, err := tx.CreateBucketIfNotExists([]byte(auditKeysBucket))
		if err != nil {
			return fmt.Errorf("bucket %s: %w", auditKeysBucket, err)
		}
		for _, e := range entries {
			if e.Key != "" && keys.Get([]byte(e.Key)) != nil {
				continue // stored already
			}
			id, err := b.NextSequence()
			if err != nil {
				return err
			}
			e.ID, e.At = int64(id), e.At.UTC().Truncate(time.Microsecond)
			if len(e.Detail) == 0 {
				e.Detail = json.RawMessage("{}")
			}
			v, err := json.Marshal(e)
			if err != nil {
				return err
			}
			idKey := binary.BigEndian.AppendUint64(nil, id)
			if err := b.Put(idKey, v); err != nil {
				return err
			}
			if e.Key != "" {
				if err := keys.Put([]byte(e.Key), idKey); err != nil {
					return fmt.Errorf("key %q: %w", e.Key, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("boltstore: write %d audit entries: %w", len(entries), err)
	}
	return nil
}

// AuditLog returns the latest limit entries of the audit log, newest
// first. A limit below 1 or above quota.MaxAuditLog means
// quota.MaxAuditLog.
func (s *Store) AuditLog(ctx context.Context, limit int) ([]quota.AuditEntry, error) {
	if limit < 1 || limit > quota.MaxAuditLog {
		limit = quota.MaxAuditLog
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("boltstore: read audit log: %w", err)
	}
	var entries []quota.AuditEntry
	err := s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket([]byte(auditBucket)).Cursor()
		for k, v := c.Last(); k != nil && len(entries) < limit; k, v = c.Prev() {
			var e quota.AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("entry %x: %w", k, err)
			}
			entries = append(entries, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: read audit log: %w", err)
	}
	return entries, nil
}
