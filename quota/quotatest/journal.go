package quotatest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

// Journal is what RunJournal tests: both sides of a journal store.
type Journal interface {
	quota.JournalStore
	quota.JournalReader
}

// RunJournal runs the quota.JournalStore and quota.JournalReader
// contract. newStore returns an empty store for one subtest and
// registers its cleanup with t.
func RunJournal(t *testing.T, newStore func(t *testing.T) Journal) {
	ctx := context.Background()
	t0 := time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)
	subjects := []string{"key:acme-prod", "user:alice", "ip:203.0.113.7"}
	// viol returns violation i: pairs share At, so ID breaks ties.
	viol := func(i int) quota.Violation {
		v := quota.Violation{ID: fmt.Sprintf("r1-%03d", i), At: t0.Add(time.Duration(i/2)*time.Second + 1500*time.Microsecond),
			Subject: subjects[i%3], KeyID: "acme-prod", User: "alice", Plan: "pro", Route: "confirm", Method: "POST",
			Path: fmt.Sprintf("/api/claude/confirm/request?n=%d", i), LimitName: "pro-1s", Limit: 100, Window: time.Second, Kind: quota.RateLimited}
		if i%4 == 3 {
			v.LimitName, v.Limit, v.Window, v.Period, v.Kind = "pro-monthly", 1000000, 0, "monthly", quota.QuotaExceeded
		}
		if i%5 == 4 {
			v.Shadow = true
		}
		return v
	}
	viols := func(from, to int) []quota.Violation {
		var vs []quota.Violation
		for i := from; i < to; i++ {
			vs = append(vs, viol(i))
		}
		return vs
	}
	newestFirst := func(vs []quota.Violation) []quota.Violation {
		vs = slices.Clone(vs)
		slices.SortFunc(vs, func(a, b quota.Violation) int {
			return cmp.Or(b.At.Compare(a.At), strings.Compare(b.ID, a.ID))
		})
		return vs
	}
	writeV := func(t *testing.T, s Journal, vs ...quota.Violation) {
		t.Helper()
		if err := s.WriteViolations(ctx, vs); err != nil {
			t.Fatalf("WriteViolations: %v", err)
		}
	}
	writeR := func(t *testing.T, s Journal, rs ...quota.Rollup) {
		t.Helper()
		if err := s.WriteRollups(ctx, rs); err != nil {
			t.Fatalf("WriteRollups: %v", err)
		}
	}
	// all pages through q and returns every violation and the page sizes.
	all := func(t *testing.T, s Journal, q quota.ViolationQuery) ([]quota.Violation, []int) {
		t.Helper()
		var got []quota.Violation
		var sizes []int
		for range 100 {
			page, next, err := s.Violations(ctx, q)
			if err != nil {
				t.Fatalf("Violations(%+v): %v", q, err)
			}
			got, sizes = append(got, page...), append(sizes, len(page))
			if next == "" {
				return got, sizes
			}
			q.Cursor = next
		}
		t.Fatal("Violations: more than 100 pages")
		return nil, nil
	}
	checkV := func(t *testing.T, got, want []quota.Violation) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("got %d violations, want %d:\ngot  %s\nwant %s", len(got), len(want), ids(got), ids(want))
			return
		}
		for i := range want {
			if g, w := showV(got[i]), showV(want[i]); g != w {
				t.Errorf("violation %d:\ngot  %s\nwant %s", i, g, w)
			}
		}
	}
	rollups := func(t *testing.T, s Journal, from, to time.Time) []quota.Rollup {
		t.Helper()
		got, err := s.Rollups(ctx, from, to)
		if err != nil {
			t.Fatalf("Rollups: %v", err)
		}
		return got
	}
	checkR := func(t *testing.T, got []quota.Rollup, want ...quota.Rollup) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("got %d roll-ups, want %d:\ngot  %v\nwant %v", len(got), len(want), showR(got...), showR(want...))
			return
		}
		for i := range want {
			if g, w := showR(got[i]), showR(want[i]); g != w {
				t.Errorf("roll-up %d:\ngot  %s\nwant %s", i, g, w)
			}
		}
	}
	min0, min1, min2 := t0, t0.Add(time.Minute), t0.Add(2*time.Minute)
	roll := func(m time.Time, subject, route, user, replica string, a, r, q int64) quota.Rollup {
		return quota.Rollup{Minute: m, Subject: subject, Route: route, User: user, Replica: replica, Allowed: a, RateLimited: r, QuotaExceeded: q}
	}

	t.Run("Empty", func(t *testing.T) {
		s := newStore(t)
		writeV(t, s)
		writeR(t, s)
		if list, next, err := s.Violations(ctx, quota.ViolationQuery{}); err != nil || len(list) != 0 || next != "" {
			t.Errorf("Violations: got %d, %q, %v, want none", len(list), next, err)
		}
		checkR(t, rollups(t, s, time.Time{}, time.Time{}))
		if n, err := s.PruneJournal(ctx, t0); err != nil || n != 0 {
			t.Errorf("PruneJournal: got %d, %v, want 0, nil", n, err)
		}
	})
	t.Run("ViolationFields", func(t *testing.T) {
		s := newStore(t)
		vs := []quota.Violation{viol(0), viol(3), viol(4)} // rate, quota, shadow
		vs[2].KeyID, vs[2].User, vs[2].Route = "", "", ""
		writeV(t, s, vs...)
		got, _ := all(t, s, quota.ViolationQuery{})
		checkV(t, got, newestFirst(vs))
	})
	t.Run("ViolationsIdempotent", func(t *testing.T) {
		s := newStore(t)
		writeV(t, s, viols(0, 10)...)
		writeV(t, s, viols(5, 15)...) // overlaps
		writeV(t, s, viols(0, 10)...) // retried
		writeV(t, s, viol(7), viol(7))
		got, _ := all(t, s, quota.ViolationQuery{})
		checkV(t, got, newestFirst(viols(0, 15)))
	})
	t.Run("Pagination", func(t *testing.T) {
		s := newStore(t)
		vs := viols(0, 25)
		writeV(t, s, vs[20:]...) // out of order
		writeV(t, s, vs[:10]...)
		writeV(t, s, vs[10:20]...)
		for _, tc := range []struct {
			limit int
			sizes []int
		}{{10, []int{10, 10, 5}}, {5, []int{5, 5, 5, 5, 5}}, {25, []int{25}}, {1000, []int{25}}} {
			t.Run(fmt.Sprint("limit=", tc.limit), func(t *testing.T) {
				got, sizes := all(t, s, quota.ViolationQuery{Limit: tc.limit})
				checkV(t, got, newestFirst(vs))
				if !slices.Equal(sizes, tc.sizes) {
					t.Errorf("page sizes: got %v, want %v", sizes, tc.sizes)
				}
			})
		}
		// A page written after the first page was read does not shift
		// the pages after it.
		page, next, err := s.Violations(ctx, quota.ViolationQuery{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		newer := viol(99)
		writeV(t, s, newer)
		rest, _ := all(t, s, quota.ViolationQuery{Limit: 10, Cursor: next})
		checkV(t, append(page, rest...), newestFirst(vs))
	})
	t.Run("DefaultLimit", func(t *testing.T) {
		s := newStore(t)
		writeV(t, s, viols(0, 101)...)
		list, next, err := s.Violations(ctx, quota.ViolationQuery{})
		if err != nil || len(list) != 100 || next == "" {
			t.Errorf("Violations: got %d, %q, %v, want 100 and a cursor", len(list), next, err)
		}
	})
	t.Run("Filters", func(t *testing.T) {
		s := newStore(t)
		vs := viols(0, 25)
		writeV(t, s, vs...)
		since, until := viol(6).At, viol(18).At // [6, 18)
		filter := func(keep func(quota.Violation) bool) []quota.Violation {
			var out []quota.Violation
			for _, v := range vs {
				if keep(v) {
					out = append(out, v)
				}
			}
			return newestFirst(out)
		}
		in := func(v quota.Violation) bool { return !v.At.Before(since) && v.At.Before(until) }
		for _, tc := range []struct {
			name string
			q    quota.ViolationQuery
			keep func(quota.Violation) bool
		}{
			{"Subject", quota.ViolationQuery{Subject: subjects[1], Limit: 3}, func(v quota.Violation) bool { return v.Subject == subjects[1] }},
			{"Since", quota.ViolationQuery{Since: since, Limit: 4}, func(v quota.Violation) bool { return !v.At.Before(since) }},
			{"Until", quota.ViolationQuery{Until: until, Limit: 4}, func(v quota.Violation) bool { return v.At.Before(until) }},
			{"SinceUntil", quota.ViolationQuery{Since: since, Until: until, Limit: 5}, in},
			{"All", quota.ViolationQuery{Subject: subjects[0], Since: since, Until: until, Limit: 2}, func(v quota.Violation) bool { return in(v) && v.Subject == subjects[0] }},
			{"UnknownSubject", quota.ViolationQuery{Subject: "key:acme"}, func(quota.Violation) bool { return false }}, // a prefix of one
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, _ := all(t, s, tc.q)
				checkV(t, got, filter(tc.keep))
			})
		}
	})
	t.Run("BadCursor", func(t *testing.T) {
		s := newStore(t)
		writeV(t, s, viols(0, 3)...)
		for _, c := range []string{"not a cursor!", "AAAA"} {
			_, _, err := s.Violations(ctx, quota.ViolationQuery{Cursor: c})
			if !errors.Is(err, quota.ErrBadCursor) || !strings.Contains(err.Error(), fmt.Sprintf("%q", c)) {
				t.Errorf("cursor %q: got %v, want ErrBadCursor naming it", c, err)
			}
		}
	})
	t.Run("RollupsIdempotentAndSummed", func(t *testing.T) {
		s := newStore(t)
		a := []quota.Rollup{
			roll(min0, "key:acme-prod", "confirm", "alice", "r1", 10, 2, 0),
			roll(min0, "key:acme-prod", "", "alice", "r1", 5, 0, 1),
			roll(min1, "key:acme-prod", "confirm", "alice", "r1", 7, 0, 0),
			roll(min2, "ip:203.0.113.7", "", "", "r1", 1, 1, 1),
		}
		writeR(t, s, a...)
		writeR(t, s, a...) // retried
		writeR(t, s, roll(min0, "key:acme-prod", "confirm", "alice", "r2", 3, 1, 1), roll(min1, "user:bob", "confirm", "bob", "r2", 4, 0, 0))
		writeR(t, s, roll(min0, "key:acme-prod", "confirm", "alice", "r2", 3, 1, 1)) // retried
		checkR(t, rollups(t, s, time.Time{}, time.Time{}),
			roll(min0, "key:acme-prod", "", "alice", "", 5, 0, 1),
			roll(min0, "key:acme-prod", "confirm", "alice", "", 13, 3, 1),
			roll(min1, "key:acme-prod", "confirm", "alice", "", 7, 0, 0),
			roll(min1, "user:bob", "confirm", "bob", "", 4, 0, 0),
			roll(min2, "ip:203.0.113.7", "", "", "", 1, 1, 1))
		checkR(t, rollups(t, s, min1, min2), // [from, to)
			roll(min1, "key:acme-prod", "confirm", "alice", "", 7, 0, 0),
			roll(min1, "user:bob", "confirm", "bob", "", 4, 0, 0))
		checkR(t, rollups(t, s, min1.Add(time.Second), time.Time{}), roll(min2, "ip:203.0.113.7", "", "", "", 1, 1, 1))
		checkR(t, rollups(t, s, time.Time{}, min1), rollups(t, s, min0, min0.Add(time.Second))...)
	})
	t.Run("RollupsOnlyGrow", func(t *testing.T) {
		s := newStore(t)
		writeR(t, s, roll(min0, "user:alice", "", "alice", "r1", 5, 2, 0))
		writeR(t, s, roll(min0, "user:alice", "", "alice", "r1", 3, 1, 0)) // an older write, late
		checkR(t, rollups(t, s, min0, min1), roll(min0, "user:alice", "", "alice", "", 5, 2, 0))
		writeR(t, s, roll(min0, "user:alice", "", "alice", "r1", 8, 2, 1))
		checkR(t, rollups(t, s, min0, min1), roll(min0, "user:alice", "", "alice", "", 8, 2, 1))
		// The same row twice in a batch: the higher counts win.
		writeR(t, s, roll(min1, "user:alice", "", "alice", "r1", 9, 0, 0), roll(min1, "user:alice", "", "alice", "r1", 4, 0, 0))
		checkR(t, rollups(t, s, min1, min2), roll(min1, "user:alice", "", "alice", "", 9, 0, 0))
	})
	t.Run("Prune", func(t *testing.T) {
		s := newStore(t)
		vs := viols(0, 25)
		writeV(t, s, vs...)
		writeR(t, s, roll(min0, "user:alice", "", "alice", "r1", 1, 0, 0), roll(min0, "user:bob", "", "bob", "r1", 1, 0, 0),
			roll(min1, "user:alice", "", "alice", "r1", 2, 0, 0), roll(min2, "user:alice", "", "alice", "r2", 3, 0, 0))
		cut := viol(10).At // violations 0-9 and the minute-0 roll-ups are older
		if n, err := s.PruneJournal(ctx, cut); err != nil || n != 12 {
			t.Errorf("PruneJournal: got %d, %v, want 12 (10 violations, 2 roll-ups)", n, err)
		}
		got, _ := all(t, s, quota.ViolationQuery{})
		checkV(t, got, newestFirst(vs[10:]))
		got, _ = all(t, s, quota.ViolationQuery{Subject: subjects[0]})
		checkV(t, got, newestFirst(slices.DeleteFunc(slices.Clone(vs[10:]), func(v quota.Violation) bool { return v.Subject != subjects[0] })))
		checkR(t, rollups(t, s, time.Time{}, time.Time{}),
			roll(min1, "user:alice", "", "alice", "", 2, 0, 0), roll(min2, "user:alice", "", "alice", "", 3, 0, 0))
		if n, err := s.PruneJournal(ctx, cut); err != nil || n != 0 {
			t.Errorf("second PruneJournal: got %d, %v, want 0, nil", n, err)
		}
	})
	t.Run("FromJournals", func(t *testing.T) {
		s := newStore(t)
		hostile := "/\x00%\xff" + strings.Repeat("a", 5000) // decoded from /%00%25%ff...
		for _, replica := range []string{"pod-a", "pod-b"} {
			j := quota.NewJournal(s, &quota.JournalOptions{Replica: replica, Now: func() time.Time { return t0 }, Logf: t.Logf})
			for i, o := range []quota.Outcome{quota.Allowed, quota.RateLimited, quota.Allowed} {
				e := quota.Event{Time: t0.Add(time.Duration(i) * time.Second), Subject: "ip:203.0.113.7", Plan: "anonymous", Method: "GET", Path: hostile, Outcome: o}
				if o == quota.RateLimited {
					e.Violated = &quota.Violated{Name: "anonymous-1s", Limit: 5, Window: time.Second}
				}
				j.Record(e)
				if err := j.Flush(ctx); err != nil { // rewrites the row with its new counts
					t.Fatalf("%s: Flush: %v", replica, err)
				}
			}
		}
		got, _ := all(t, s, quota.ViolationQuery{})
		if len(got) != 2 || got[0].ID != "pod-b-1" || got[1].ID != "pod-a-1" {
			t.Fatalf("got violations %v, want [pod-b-1 pod-a-1]", ids(got))
		}
		if p := got[0].Path; !utf8.ValidString(p) || strings.ContainsRune(p, 0) || len(p) > 1024 || !strings.HasPrefix(p, "/%\uFFFDaaa") {
			t.Errorf("stored path %.20q... (%d bytes): want valid UTF-8, no NUL, at most 1 KiB", p, len(p))
		}
		checkR(t, rollups(t, s, time.Time{}, time.Time{}), roll(min0, "ip:203.0.113.7", "", "", "", 4, 2, 0))
	})
	t.Run("CanceledContext", func(t *testing.T) {
		s := newStore(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.WriteViolations(cctx, viols(0, 1)); err == nil {
			t.Error("WriteViolations with a canceled context: got nil error")
		}
		if err := s.WriteRollups(cctx, []quota.Rollup{roll(min0, "user:alice", "", "", "r1", 1, 0, 0)}); err == nil {
			t.Error("WriteRollups with a canceled context: got nil error")
		}
		if _, _, err := s.Violations(cctx, quota.ViolationQuery{}); err == nil {
			t.Error("Violations with a canceled context: got nil error")
		}
	})
}

func ids(vs []quota.Violation) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.ID
	}
	return out
}

func showV(v quota.Violation) string {
	return fmt.Sprintf("%s@%s %s key=%q user=%q plan=%q route=%q %s %s limit=%s/%d/%v/%q %v shadow=%v", v.ID,
		v.At.UTC().Format(time.RFC3339Nano), v.Subject, v.KeyID, v.User, v.Plan, v.Route, v.Method, v.Path,
		v.LimitName, v.Limit, v.Window, v.Period, v.Kind, v.Shadow)
}

func showR(rs ...quota.Rollup) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s route=%q user=%q replica=%q %d/%d/%d", r.Minute.UTC().Format(time.RFC3339), r.Subject,
			r.Route, r.User, r.Replica, r.Allowed, r.RateLimited, r.QuotaExceeded)
	}
	return b.String()
}
