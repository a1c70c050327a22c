package pgstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

var (
	_ quota.JournalStore  = (*Store)(nil)
	_ quota.JournalReader = (*Store)(nil)
	_ quota.AuditStore    = (*Store)(nil)
)

// kinds maps violations.kind to Outcome.
var kinds = map[string]quota.Outcome{"rate_limited": quota.RateLimited, "quota_exceeded": quota.QuotaExceeded}

// WriteViolations inserts vs in one statement, skipping IDs already
// stored; see quota.JournalStore.
func (s *Store) WriteViolations(ctx context.Context, vs []quota.Violation) error {
	if len(vs) == 0 {
		return nil
	}
	n := len(vs)
	ids, subjects, keyIDs, users, plans := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	routes, methods, paths, names, periods := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	kind, ats, limits, windows, shadows := make([]string, n), make([]time.Time, n), make([]int64, n), make([]int64, n), make([]bool, n)
	for i, v := range vs {
		ids[i], subjects[i], keyIDs[i], users[i], plans[i] = v.ID, v.Subject, v.KeyID, v.User, v.Plan
		routes[i], methods[i], paths[i], names[i], periods[i] = v.Route, v.Method, v.Path, v.LimitName, v.Period
		kind[i], ats[i], limits[i], windows[i], shadows[i] = v.Kind.String(), v.At, v.Limit, v.Window.Milliseconds(), v.Shadow
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO violations (id, at, subject, key_id, user_id, plan, route, method, path,
			limit_name, limit_value, window_ms, period, kind, shadow)
		SELECT id, at, subject, key_id, user_id, plan, route, method, path,
			limit_name, limit_value, NULLIF(window_ms, 0), NULLIF(period, ''), kind, shadow
		FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
			$8::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[], $13::text[], $14::text[], $15::boolean[])
			AS v(id, at, subject, key_id, user_id, plan, route, method, path,
			limit_name, limit_value, window_ms, period, kind, shadow)
		ON CONFLICT (id) DO NOTHING`,
		ids, ats, subjects, keyIDs, users, plans, routes, methods, paths, names, limits, windows, periods, kind, shadows)
	if err != nil {
		return fmt.Errorf("pgstore: write %d violations: %w", n, err)
	}
	return nil
}

// WriteRollups upserts rs in one statement, keeping per count the
// highest value; see quota.JournalStore.
func (s *Store) WriteRollups(ctx context.Context, rs []quota.Rollup) error {
	if len(rs) == 0 {
		return nil
	}
	// One row per key: an upsert may not touch a row twice.
	type key struct {
		minute                  int64
		subject, route, replica string
	}
	at := make(map[key]int, len(rs))
	var minutes []time.Time
	var subjects, routes, replicas, users []string
	var allowed, limited, exceeded []int64
	for _, r := range rs {
		k := key{r.Minute.Unix(), r.Subject, r.Route, r.Replica}
		if i, ok := at[k]; ok {
			users[i] = r.User
			allowed[i], limited[i], exceeded[i] = max(allowed[i], r.Allowed), max(limited[i], r.RateLimited), max(exceeded[i], r.QuotaExceeded)
			continue
		}
		at[k] = len(minutes)
		minutes, subjects, routes, replicas = append(minutes, r.Minute), append(subjects, r.Subject), append(routes, r.Route), append(replicas, r.Replica)
		users, allowed, limited, exceeded = append(users, r.User), append(allowed, r.Allowed), append(limited, r.RateLimited), append(exceeded, r.QuotaExceeded)
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO usage_rollups (minute, subject, route, replica, user_id, allowed, rate_limited, quota_exceeded)
		SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
			$6::bigint[], $7::bigint[], $8::bigint[])
		ON CONFLICT (minute, subject, route, replica) DO UPDATE SET
			user_id = excluded.user_id,
			allowed = GREATEST(usage_rollups.allowed, excluded.allowed),
			rate_limited = GREATEST(usage_rollups.rate_limited, excluded.rate_limited),
			quota_exceeded = GREATEST(usage_rollups.quota_exceeded, excluded.quota_exceeded)`,
		minutes, subjects, routes, replicas, users, allowed, limited, exceeded)
	if err != nil {
		return fmt.Errorf("pgstore: write %d roll-ups: %w", len(minutes), err)
	}
	return nil
}

// Violations returns a page of violations, newest first; see
// quota.JournalReader. It walks index violations_at, or
// violations_subject_at for one subject.
func (s *Store) Violations(ctx context.Context, q quota.ViolationQuery) ([]quota.Violation, string, error) {
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return "$" + strconv.Itoa(len(args)) }
	if q.Subject != "" {
		where = append(where, "subject = "+arg(q.Subject))
	}
	if !q.Since.IsZero() {
		where = append(where, "at >= "+arg(q.Since))
	}
	if !q.Until.IsZero() {
		where = append(where, "at < "+arg(q.Until))
	}
	if q.Cursor != "" {
		at, id, err := quota.ParseViolationCursor(q.Cursor)
		if err != nil {
			return nil, "", fmt.Errorf("pgstore: violations: %w", err)
		}
		where = append(where, "(at, id) < ("+arg(at)+", "+arg(id)+")")
	}
	sql := `SELECT id, at, subject, key_id, user_id, plan, route, method, path,
		limit_name, limit_value, coalesce(window_ms, 0), coalesce(period, ''), kind, shadow FROM violations`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	size := q.PageSize()
	sql += " ORDER BY at DESC, id DESC LIMIT " + arg(size+1)
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, "", fmt.Errorf("pgstore: violations: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (quota.Violation, error) {
		var v quota.Violation
		var windowMS int64
		var kind string
		err := row.Scan(&v.ID, &v.At, &v.Subject, &v.KeyID, &v.User, &v.Plan, &v.Route, &v.Method, &v.Path,
			&v.LimitName, &v.Limit, &windowMS, &v.Period, &kind, &v.Shadow)
		v.At, v.Window, v.Kind = v.At.UTC(), time.Duration(windowMS)*time.Millisecond, kinds[kind]
		return v, err
	})
	if err != nil {
		return nil, "", fmt.Errorf("pgstore: violations: %w", err)
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
	var where []string
	var args []any
	if !from.IsZero() {
		args = append(args, from)
		where = append(where, "minute >= $"+strconv.Itoa(len(args)))
	}
	if !to.IsZero() {
		args = append(args, to)
		where = append(where, "minute < $"+strconv.Itoa(len(args)))
	}
	sql := `SELECT minute, subject, route, user_id, sum(allowed)::bigint, sum(rate_limited)::bigint, sum(quota_exceeded)::bigint
		FROM usage_rollups`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += ` GROUP BY minute, subject, route, user_id
		ORDER BY minute, subject COLLATE "C", route COLLATE "C", user_id COLLATE "C"`
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("pgstore: roll-ups: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (quota.Rollup, error) {
		var r quota.Rollup
		err := row.Scan(&r.Minute, &r.Subject, &r.Route, &r.User, &r.Allowed, &r.RateLimited, &r.QuotaExceeded)
		r.Minute = r.Minute.UTC()
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: roll-ups: %w", err)
	}
	return list, nil
}

// PruneJournal deletes violations and roll-ups older than before, in one
// statement; see quota.JournalReader.
func (s *Store) PruneJournal(ctx context.Context, before time.Time) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `
		WITH v AS (DELETE FROM violations WHERE at < $1 RETURNING 1),
		     r AS (DELETE FROM usage_rollups WHERE minute < $1 RETURNING 1)
		SELECT (SELECT count(*) FROM v) + (SELECT count(*) FROM r)`, before).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("pgstore: prune journal: %w", err)
	}
	return n, nil
}
