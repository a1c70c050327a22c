// Package boltstore is the embedded durable store of gaia-proxy: one
// bbolt file under data_dir, used when no database is configured. It
// implements quota.Store, quota.JournalStore and quota.JournalReader, and
// keeps runtime rules and the audit log with the semantics of
// quota/pgstore (both pass quota/quotatest).
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// Bucket names; Open creates usageBucket, rulesBucket and auditBucket,
// the journal's buckets are created by its first write.
const (
	// usageBucket holds quota usage: key = counter key, 0x00, period
	// start in unix seconds (8 bytes big-endian), so keys sort by counter
	// then time; value = used and seq (8 bytes big-endian each).
	usageBucket = "quota_usage"
)

// lockTimeout is how long Open waits for another process to release
// the data file.
const lockTimeout = time.Second

// ErrLocked reports that another process holds the data file.
var ErrLocked = errors.New("locked by another gaia-proxy process")

// Store is a quota.Store in a bbolt file. Safe for concurrent use.
type Store struct {
	db *bbolt.DB

	mu        sync.Mutex
	watchers  map[int]func() // WatchRules callbacks, by registration
	nextWatch int
}

var _ quota.Store = (*Store)(nil)

// Open opens (or creates) the data file at path, creating its directory
// if missing. If another process holds the file, Open fails after a
// second with an error wrapping ErrLocked.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("boltstore: create data directory: %w", err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: lockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("boltstore: data file %s is %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range []string{usageBucket, rulesBucket, auditBucket} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return fmt.Errorf("bucket %s: %w", b, err)
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	return &Store{db: db, watchers: map[int]func(){}}, nil
}

// Close closes the data file.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("boltstore: close: %w", err)
	}
	return nil
}

// Load returns the stored value of each counter; see quota.Store.
func (s *Store) Load(ctx context.Context, counters []limiter.Counter) ([]limiter.CounterValue, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("boltstore: load: %w", err)
	}
	values := make([]limiter.CounterValue, len(counters))
	err := s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(usageBucket))
		var key []byte
		for i, c := range counters {
			key = usageKey(key[:0], c)
			values[i].Counter = c
			values[i].Used, values[i].Seq = decodeUsage(b.Get(key))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: load: %w", err)
	}
	return values, nil
}

// Write stores values in one transaction, keeping for each counter the
// value with the highest Seq, and returns the values it holds instead
// of those it did not take; see quota.Store.
func (s *Store) Write(ctx context.Context, values []limiter.CounterValue) ([]limiter.CounterValue, error) {
	if len(values) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("boltstore: write: %w", err)
	}
	// The highest value of each counter in the batch: those below it are
	// not the ledger's to report.
	top := make(map[string]limiter.CounterValue, len(values))
	for _, v := range values {
		k := string(usageKey(nil, v.Counter))
		if cur, ok := top[k]; !ok || v.Seq > cur.Seq {
			top[k] = v
		}
	}
	var ahead []limiter.CounterValue
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(usageBucket))
		for k, v := range top {
			key := []byte(k) // bbolt keeps key until commit
			if old := b.Get(key); old != nil {
				if used, seq := decodeUsage(old); seq >= v.Seq {
					if seq > v.Seq || used != v.Used {
						ahead = append(ahead, limiter.CounterValue{Counter: v.Counter, Used: used, Seq: seq})
					}
					continue
				}
			}
			if err := b.Put(key, encodeUsage(v.Used, v.Seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: write: %w", err)
	}
	return ahead, nil
}

// Prune deletes the usage of periods that started before before and
// returns how many counters it deleted. A month is the longest period,
// so before more than 32 days ago deletes only periods that are over.
func (s *Store) Prune(ctx context.Context, before time.Time) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(usageBucket))
		var old [][]byte
		cut := before.Unix()
		err := b.ForEach(func(k, _ []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if len(k) >= 9 && int64(binary.BigEndian.Uint64(k[len(k)-8:])) < cut {
				old = append(old, bytes.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range old { // deleting while iterating can skip keys
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("boltstore: prune: %w", err)
	}
	return n, nil
}

// PeriodUsage returns every counter of a period that started at one of
// starts (to the second), in no particular order, for the admin API's
// ranking of subjects; see quotatest.RunPeriodUsage. It scans every
// counter: the embedded store serves one process, with as many counters
// as its callers.
func (s *Store) PeriodUsage(ctx context.Context, starts []time.Time) ([]limiter.CounterValue, error) {
	if len(starts) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("boltstore: period usage: %w", err)
	}
	at := make(map[int64]bool, len(starts))
	for _, t := range starts {
		at[t.Unix()] = true
	}
	var values []limiter.CounterValue
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte(usageBucket)).ForEach(func(k, v []byte) error {
			if len(k) < 9 {
				return nil
			}
			start := int64(binary.BigEndian.Uint64(k[len(k)-8:]))
			if !at[start] {
				return nil
			}
			used, seq := decodeUsage(v)
			c := limiter.Counter{Key: string(k[:len(k)-9]), Start: time.Unix(start, 0).UTC()}
			values = append(values, limiter.CounterValue{Counter: c, Used: used, Seq: seq})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: period usage: %w", err)
	}
	return values, nil
}

// usageKey appends the usageBucket key of c to dst.
func usageKey(dst []byte, c limiter.Counter) []byte {
	dst = append(dst, c.Key...)
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint64(dst, uint64(c.Start.Unix()))
}

// encodeUsage returns the usageBucket value of used and seq.
func encodeUsage(used, seq int64) []byte {
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(used))
	return binary.BigEndian.AppendUint64(v, uint64(seq))
}

// decodeUsage reads a usageBucket value; nil or short reads as zero.
func decodeUsage(v []byte) (used, seq int64) {
	if len(v) < 16 {
		return 0, 0
	}
	return int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:]))
}
