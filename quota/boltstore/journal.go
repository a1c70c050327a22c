package boltstore

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/bbolt"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

// The journal's buckets, created by the first write.
const (
	// violationsBucket holds violations: key = At in unix nanoseconds
	// (8 bytes big-endian) and ID, so keys sort oldest first and a
	// reverse scan is newest first; value = the Violation in JSON.
	violationsBucket = "violations"
	// subjectBucket indexes violationsBucket by subject: key = subject,
	// 0x00, the violationsBucket key; empty value.
	subjectBucket = "violations_by_subject"
	// rollupsBucket holds each replica's roll-ups: key = minute in unix
	// seconds (8 bytes big-endian), subject, 0x00, route, 0x00, replica
	// (see rollupKey); value = see encodeRollup.
	rollupsBucket = "usage_rollups"
)

// rollupKey returns the rollupsBucket key of r.
func rollupKey(r quota.Rollup) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 10+len(r.Subject)+len(r.Route)+len(r.Replica)), uint64(r.Minute.Unix()))
	return append(append(append(append(append(k, r.Subject...), 0), r.Route...), 0), r.Replica...)
}

// rollupBinary starts a roll-up value in the binary encoding; a value
// that starts with '{' is the JSON of earlier versions.
const rollupBinary = 1

// encodeRollup returns the rollupsBucket value of r: rollupBinary, the
// counts Allowed, RateLimited and QuotaExceeded as uvarints, then User.
// The key holds the rest. A flush rewrites every busy subject's roll-up
// once per interval; JSON made that most of the flush's CPU.
func encodeRollup(r quota.Rollup) []byte {
	v := make([]byte, 0, 1+3*binary.MaxVarintLen64+len(r.User))
	v = append(v, rollupBinary)
	for _, n := range [...]int64{r.Allowed, r.RateLimited, r.QuotaExceeded} {
		v = binary.AppendUvarint(v, uint64(n))
	}
	return append(v, r.User...)
}

// decodeRollup reads the roll-up stored under k as v, in either
// encoding.
func decodeRollup(k, v []byte) (quota.Rollup, error) {
	var r quota.Rollup
	if len(v) > 0 && v[0] == '{' {
		err := json.Unmarshal(v, &r)
		return r, err
	}
	parts := bytes.SplitN(k[min(8, len(k)):], []byte{0}, 3)
	if len(k) < 8 || len(parts) != 3 || len(v) == 0 || v[0] != rollupBinary {
		return r, errors.New("not a roll-up")
	}
	r.Minute = time.Unix(int64(binary.BigEndian.Uint64(k)), 0).UTC()
	r.Subject, r.Route, r.Replica = string(parts[0]), string(parts[1]), string(parts[2])
	v = v[1:]
	for _, n := range [...]*int64{&r.Allowed, &r.RateLimited, &r.QuotaExceeded} {
		u, size := binary.Uvarint(v)
		if size <= 0 {
			return r, errors.New("truncated roll-up counts")
		}
		*n, v = int64(u), v[size:]
	}
	r.User = string(v)
	return r, nil
}

var (
	_ quota.JournalStore  = (*Store)(nil)
	_ quota.JournalReader = (*Store)(nil)
	_ quota.AuditStore    = (*Store)(nil)
)

// WriteViolations stores vs in one transaction, skipping those already
// stored; see quota.JournalStore.
func (s *Store) WriteViolations(ctx context.Context, vs []quota.Violation) error {
	if len(vs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltstore: write violations: %w", err)
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b, idx, err := buckets(tx, violationsBucket, subjectBucket)
		if err != nil {
			return err
		}
		for _, v := range vs {
			v.At = v.At.UTC().Truncate(time.Microsecond) // as PostgreSQL keeps it
			k := violationKey(v.At, v.ID)
			if b.Get(k) != nil {
				continue
			}
			val, err := json.Marshal(v)
			if err != nil {
				return err
			}
			if err := b.Put(k, val); err != nil {
				return err
			}
			if err := idx.Put(append([]byte(v.Subject+"\x00"), k...), nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("boltstore: write %d violations: %w", len(vs), err)
	}
	return nil
}

// WriteRollups stores rs in one transaction, keeping per count the
// highest value; see quota.JournalStore.
func (s *Store) WriteRollups(ctx context.Context, rs []quota.Rollup) error {
	if len(rs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltstore: write roll-ups: %w", err)
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b, _, err := buckets(tx, rollupsBucket, "")
		if err != nil {
			return err
		}
		for _, r := range rs {
			k := rollupKey(r)
			if old := b.Get(k); old != nil {
				o, err := decodeRollup(k, old)
				if err != nil {
					return fmt.Errorf("roll-up %q: %w", k, err)
				}
				r.Allowed, r.RateLimited, r.QuotaExceeded = max(r.Allowed, o.Allowed), max(r.RateLimited, o.RateLimited), max(r.QuotaExceeded, o.QuotaExceeded)
			}
			if err := b.Put(k, encodeRollup(r)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("boltstore: write %d roll-ups: %w", len(rs), err)
	}
	return nil
}

// Violations returns a page of violations, newest first; see
// quota.JournalReader. A reverse scan of violationsBucket, or of the
// subject's range of subjectBucket.
func (s *Store) Violations(ctx context.Context, q quota.ViolationQuery) ([]quota.Violation, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", fmt.Errorf("boltstore: violations: %w", err)
	}
	var upper []byte // exclusive, a violationsBucket key; nil is none
	if !q.Until.IsZero() {
		upper = violationKey(q.Until.Truncate(time.Microsecond), "")
	}
	if q.Cursor != "" {
		at, id, err := quota.ParseViolationCursor(q.Cursor)
		if err != nil {
			return nil, "", fmt.Errorf("boltstore: violations: %w", err)
		}
		if k := violationKey(at, id); upper == nil || bytes.Compare(k, upper) < 0 {
			upper = k
		}
	}
	var lower []byte // inclusive
	if !q.Since.IsZero() {
		lower = violationKey(q.Since.Truncate(time.Microsecond), "")
	}
	size := q.PageSize()
	var list []quota.Violation
	err := s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(violationsBucket))
		if b == nil {
			return nil
		}
		c, prefix := b.Cursor(), []byte(nil)
		if q.Subject != "" {
			c, prefix = tx.Bucket([]byte(subjectBucket)).Cursor(), []byte(q.Subject+"\x00")
		}
		var k []byte
		switch {
		case upper != nil:
			k = seekBefore(c, append(bytes.Clone(prefix), upper...))
		case prefix != nil: // before the first key past the prefix
			k = seekBefore(c, append(prefix[:len(prefix)-1:len(prefix)-1], 1))
		default:
			k, _ = c.Last()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && len(list) <= size; k, _ = c.Prev() {
			vk := k[len(prefix):]
			if lower != nil && bytes.Compare(vk, lower) < 0 {
				break
			}
			var v quota.Violation
			if err := json.Unmarshal(b.Get(vk), &v); err != nil {
				return fmt.Errorf("violation %q: %w", vk, err)
			}
			list = append(list, v)
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("boltstore: violations: %w", err)
	}
	if len(list) <= size {
		return list, "", nil
	}
	list = list[:size]
	return list, quota.ViolationCursor(list[size-1]), nil
}

// Rollups returns the roll-ups of [from, to) summed over replicas; see
// quota.JournalReader.
func (s *Store) Rollups(ctx context.Context, from, to time.Time) ([]quota.Rollup, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("boltstore: roll-ups: %w", err)
	}
	type key struct {
		minute               int64
		subject, route, user string
	}
	sums := map[key]*quota.Rollup{}
	err := s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(rollupsBucket))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, v := c.First()
		if !from.IsZero() {
			k, v = c.Seek(binary.BigEndian.AppendUint64(nil, uint64(from.Unix())))
		}
		for ; k != nil; k, v = c.Next() {
			if !to.IsZero() && int64(binary.BigEndian.Uint64(k)) >= to.Unix() {
				break
			}
			r, err := decodeRollup(k, v)
			if err != nil {
				return fmt.Errorf("roll-up %q: %w", k, err)
			}
			id := key{r.Minute.Unix(), r.Subject, r.Route, r.User}
			if sum := sums[id]; sum != nil {
				sum.Allowed, sum.RateLimited, sum.QuotaExceeded = sum.Allowed+r.Allowed, sum.RateLimited+r.RateLimited, sum.QuotaExceeded+r.QuotaExceeded
				continue
			}
			r.Replica = ""
			sums[id] = &r
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: roll-ups: %w", err)
	}
	list := make([]quota.Rollup, 0, len(sums))
	for _, r := range sums {
		list = append(list, *r)
	}
	slices.SortFunc(list, func(a, b quota.Rollup) int {
		return cmp.Or(a.Minute.Compare(b.Minute), cmp.Compare(a.Subject, b.Subject), cmp.Compare(a.Route, b.Route), cmp.Compare(a.User, b.User))
	})
	return list, nil
}

// PruneJournal deletes violations and roll-ups older than before, in one
// transaction; see quota.JournalReader.
func (s *Store) PruneJournal(ctx context.Context, before time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("boltstore: prune journal: %w", err)
	}
	n := 0
	err := s.db.Update(func(tx *bbolt.Tx) error {
		vb, idx, err := buckets(tx, violationsBucket, subjectBucket)
		if err != nil {
			return err
		}
		rb, _, err := buckets(tx, rollupsBucket, "")
		if err != nil {
			return err
		}
		// Collect first: deleting while iterating can skip keys.
		var old, oldIdx, oldRollups [][]byte
		cut := violationKey(before, "")
		c := vb.Cursor()
		for k, v := c.First(); k != nil && bytes.Compare(k, cut) < 0; k, v = c.Next() {
			var viol quota.Violation
			if err := json.Unmarshal(v, &viol); err != nil {
				return fmt.Errorf("violation %q: %w", k, err)
			}
			old = append(old, bytes.Clone(k))
			oldIdx = append(oldIdx, append([]byte(viol.Subject+"\x00"), k...))
		}
		cut = binary.BigEndian.AppendUint64(nil, uint64(before.Unix()))
		c = rb.Cursor()
		for k, _ := c.First(); k != nil && bytes.Compare(k, cut) < 0; k, _ = c.Next() {
			oldRollups = append(oldRollups, bytes.Clone(k))
		}
		for _, del := range []struct {
			b    *bbolt.Bucket
			keys [][]byte
		}{{vb, old}, {idx, oldIdx}, {rb, oldRollups}} {
			for _, k := range del.keys {
				if err := del.b.Delete(k); err != nil {
					return err
				}
			}
		}
		n = len(old) + len(oldRollups)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("boltstore: prune journal: %w", err)
	}
	return n, nil
}

// seekBefore moves c to the last key before key and returns it.
func seekBefore(c *bbolt.Cursor, key []byte) []byte {
	if k, _ := c.Seek(key); k == nil {
		k, _ = c.Last()
		return k
	}
	k, _ := c.Prev()
	return k
}

// buckets returns the named buckets of a writable tx, creating them if
// missing; "" returns nil.
func buckets(tx *bbolt.Tx, a, b string) (*bbolt.Bucket, *bbolt.Bucket, error) {
	var out [2]*bbolt.Bucket
	for i, name := range []string{a, b} {
		if name == "" {
			continue
		}
		bk, err := tx.CreateBucketIfNotExists([]byte(name))
		if err != nil {
			return nil, nil, fmt.Errorf("bucket %s: %w", name, err)
		}
		out[i] = bk
	}
	return out[0], out[1], nil
}

// violationKey returns the violationsBucket key of a violation at at
// with id; id "" gives the first key at at.
func violationKey(at time.Time, id string) []byte {
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(id)), uint64(at.UnixNano())), id...)
}
