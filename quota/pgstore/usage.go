package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// loadUsage reads every counter in one round trip; ord keeps the
// caller's order and lets a counter appear twice.
const loadUsage = `
SELECT coalesce(u.used, 0), coalesce(u.seq, 0)
FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS c(counter, period_start, ord)
LEFT JOIN quota_usage u ON u.counter = c.counter AND u.period_start = c.period_start
ORDER BY c.ord`

// writeUsage stores one batch in one statement, keeping per counter the
// value with the highest seq.
//
// Why this is crash-safe: every row is the counter's absolute usage with
// the hot path's version of it, never an increment. The WHERE clause
// keeps the row with the highest seq, so a batch retried after a timeout
// whose first attempt did commit, a replayed batch, or an old batch that
// lands after a newer one all change nothing. A crash between the hot
// path and the ledger therefore loses at most the changes not flushed
// yet, and the next flush of the same counter (from any replica: the
// value lives in Redis) carries them, since its value includes them.
//
// DISTINCT ON keeps the highest seq of a counter listed twice in one
// batch (ON CONFLICT may not touch a row twice in one statement), and its
// ORDER BY makes concurrent batches lock rows in the same order, so they
// cannot deadlock.
const writeUsage = `
WITH v AS (
	SELECT DISTINCT ON (counter, period_start) counter, period_start, used, seq
	FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[]) AS v(counter, period_start, used, seq)
	ORDER BY counter, period_start, seq DESC
), w AS (
	INSERT INTO quota_usage AS q (counter, period_start, used, seq)
	SELECT counter, period_start, used, seq FROM v
	ON CONFLICT (counter, period_start) DO UPDATE
	SET used = excluded.used, seq = excluded.seq, updated_at = now()
	WHERE q.seq < excluded.seq
)
SELECT q.counter, q.period_start, q.used, q.seq
FROM v JOIN quota_usage q USING (counter, period_start)
WHERE q.seq > v.seq OR (q.seq = v.seq AND q.used <> v.used)`

// writeUsage's last SELECT reads the table as it was before the INSERT
// (PostgreSQL runs a statement's parts on one snapshot), so it finds the
// rows the INSERT left alone because they were ahead. A row made ahead
// by a transaction that committed after that snapshot is not reported;
// the next write of its counter finds it.

// second returns a counter's period start as stored: to the second, in
// UTC (timestamptz keeps microseconds; the contract identifies seconds).
func second(t time.Time) time.Time { return time.Unix(t.Unix(), 0).UTC() }

// Load returns the stored value of each counter, in one query; see
// quota.Store.
func (s *Store) Load(ctx context.Context, counters []limiter.Counter) ([]limiter.CounterValue, error) {
	values := make([]limiter.CounterValue, len(counters))
	if len(counters) == 0 {
		return values, nil
	}
	keys := make([]string, len(counters))
	starts := make([]time.Time, len(counters))
	for i, c := range counters {
		keys[i], starts[i] = c.Key, second(c.Start)
	}
	rows, err := s.pool.Query(ctx, loadUsage, keys, starts)
	if err != nil {
		return nil, fmt.Errorf("pgstore: load usage: %w", err)
	}
	defer rows.Close()
	i := 0
	for ; rows.Next() && i < len(values); i++ {
		values[i].Counter = counters[i]
		if err := rows.Scan(&values[i].Used, &values[i].Seq); err != nil {
			return nil, fmt.Errorf("pgstore: load usage: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgstore: load usage: %w", err)
	}
	if i != len(values) {
		return nil, fmt.Errorf("pgstore: load usage: got %d rows for %d counters", i, len(values))
	}
	return values, nil
}

// Write stores values in one statement, keeping for each counter the
// value with the highest Seq, and returns the values it holds instead
// of those it did not take; see quota.Store.
func (s *Store) Write(ctx context.Context, values []limiter.CounterValue) ([]limiter.CounterValue, error) {
	if len(values) == 0 {
		return nil, nil
	}
	keys := make([]string, len(values))
	starts := make([]time.Time, len(values))
	used := make([]int64, len(values))
	seqs := make([]int64, len(values))
	for i, v := range values {
		keys[i], starts[i], used[i], seqs[i] = v.Key, second(v.Start), v.Used, v.Seq
	}
	rows, err := s.pool.Query(ctx, writeUsage, keys, starts, used, seqs)
	if err != nil {
		return nil, fmt.Errorf("pgstore: write usage: %w", err)
	}
	ahead, err := pgx.CollectRows(rows, scanValue)
	if err != nil {
		return nil, fmt.Errorf("pgstore: write usage: %w", err)
	}
	return ahead, nil
}

// scanValue reads a row of counter, period_start, used and seq.
func scanValue(row pgx.CollectableRow) (limiter.CounterValue, error) {
	var v limiter.CounterValue
	err := row.Scan(&v.Key, &v.Start, &v.Used, &v.Seq)
	v.Start = v.Start.UTC()
	return v, err
}

// Prune deletes the usage of periods that started before before and
// returns how many counters it deleted. A month is the longest period,
// so before more than 32 days ago deletes only periods that are over.
func (s *Store) Prune(ctx context.Context, before time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, "DELETE FROM quota_usage WHERE period_start < $1", before)
	if err != nil {
		return 0, fmt.Errorf("pgstore: prune usage: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// periodUsage reads the counters of some period starts; the index on
// period_start finds them.
const periodUsage = `
SELECT counter, period_start, used, seq FROM quota_usage
WHERE period_start = ANY($1::timestamptz[])`

// PeriodUsage returns every counter of a period that started at one of
// starts (to the second), in no particular order, for the admin API's
// ranking of subjects; see quotatest.RunPeriodUsage.
func (s *Store) PeriodUsage(ctx context.Context, starts []time.Time) ([]limiter.CounterValue, error) {
	if len(starts) == 0 {
		return nil, nil
	}
	at := make([]time.Time, len(starts))
	for i, t := range starts {
		at[i] = second(t)
	}
	rows, err := s.pool.Query(ctx, periodUsage, at)
	if err != nil {
		return nil, fmt.Errorf("pgstore: period usage: %w", err)
	}
	values, err := pgx.CollectRows(rows, scanValue)
	if err != nil {
		return nil, fmt.Errorf("pgstore: period usage: %w", err)
	}
	return values, nil
}
