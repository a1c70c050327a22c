package boltstore_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/gaia-proxy/gaia-proxy/quota"
	"github.com/gaia-proxy/gaia-proxy/quota/quotatest"
)

func TestJournal(t *testing.T) {
	quotatest.RunJournal(t, func(t *testing.T) quotatest.Journal { return temp(t) })
}

// TestRollupsWrittenAsJSON reads roll-ups that earlier versions stored in
// JSON, and merges a newer write of the same minute into them.
func TestRollupsWrittenAsJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gaia.db")
	minute := time.Date(2026, 11, 27, 21, 0, 0, 0, time.UTC)
	old := []quota.Rollup{
		{Minute: minute, Subject: "user:alice", Route: "default", User: "alice", Replica: "r1", Allowed: 7, RateLimited: 2, QuotaExceeded: 1},
		{Minute: minute, Subject: "key:k1", Route: "search", User: "bob", Replica: "r1", Allowed: 3},
	}
	s := open(t, path) // creates the file and its buckets
	if err := s.WriteRollups(context.Background(), old[:1]); err != nil {
		t.Fatal(err)
	}
	s.Close()

	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("usage_rollups"))
		for _, r := range old {
			k := binary.BigEndian.AppendUint64(nil, uint64(r.Minute.Unix()))
			k = append(append(append(append(append(k, r.Subject...), 0), r.Route...), 0), r.Replica...)
			v, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := b.Put(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	s = open(t, path)
	defer s.Close()
	ctx := context.Background()
	got, err := s.Rollups(ctx, minute, minute.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	want := []quota.Rollup{old[1], old[0]} // sorted by subject
	for i := range want {
		want[i].Replica = ""
	}
	if !slices.Equal(got, want) {
		t.Fatalf("JSON roll-ups read back as %+v, want %+v", got, want)
	}

	// A replica restarted within the minute counts from zero: the stored
	// counts stay where they are higher.
	newer := old[0]
	newer.Allowed, newer.RateLimited, newer.QuotaExceeded = 9, 1, 0
	if err := s.WriteRollups(ctx, []quota.Rollup{newer}); err != nil {
		t.Fatal(err)
	}
	got, err = s.Rollups(ctx, minute, minute.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	want[1].Allowed, want[1].RateLimited, want[1].QuotaExceeded = 9, 2, 1
	if !slices.Equal(got, want) {
		t.Fatalf("after merging into a JSON roll-up: %+v, want %+v", got, want)
	}
}
