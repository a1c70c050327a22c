package boltstore_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
	"github.com/gaia-proxy/gaia-proxy/quota/boltstore"
)

// flushSubjects is how many subjects one flush carries: every user of
// bench/gaia-bench.yaml's load, each seen within the flush interval.
const flushSubjects = 10000

// BenchmarkFlush is one flush of a busy second: the usage of every
// subject's daily quota counter, and its roll-up of the current minute,
// both already written by the flushes before.
//
//	go test ./quota/boltstore -run '^$' -bench Flush -benchmem -count=5
func BenchmarkFlush(b *testing.B) {
	s, err := boltstore.Open(filepath.Join(b.TempDir(), "gaia.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	day := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	minute := day.Add(21 * time.Hour)
	values := make([]limiter.CounterValue, flushSubjects)
	rollups := make([]quota.Rollup, flushSubjects)
	for i := range values {
		id := strconv.Itoa(i)
		values[i].Counter = limiter.Counter{Key: "{user:u" + id + "}user:u" + id + "/qdaily", Start: day}
		rollups[i] = quota.Rollup{Minute: minute, Subject: "user:u" + id, Route: "default", User: "u" + id, Replica: "bench-replica"}
	}
	flush := func(n int64) {
		for i := range values {
			values[i].Used, values[i].Seq = n, n
			rollups[i].Allowed = n
		}
		if _, err := s.Write(ctx, values); err != nil {
			b.Fatal(err)
		}
		if err := s.WriteRollups(ctx, rollups); err != nil {
			b.Fatal(err)
		}
	}
	flush(1)
	b.ResetTimer()
	for n := range b.N {
		flush(int64(n) + 2)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/flushSubjects, "µs/subject")
}
