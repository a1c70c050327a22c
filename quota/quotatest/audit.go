package quotatest

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

// Audit is what RunAudit tests: an audit log.
type Audit interface {
	Audit(ctx context.Context, actor, action, subject string, detail any) error
	AuditLog(ctx context.Context, limit int) ([]quota.AuditEntry, error)
}

// RunAudit runs the audit log contract: entries come back newest first,
// with their detail as JSON ({} for none), their time in UTC, and
// increasing ids; a store that is a quota.AuditStore keeps the order
// and the times of the entries WriteAudit is given, and stores an entry
// once per Key (runAuditKeys). newStore returns an empty store for one
// subtest and registers its cleanup with t.
func RunAudit(t *testing.T, newStore func(t *testing.T) Audit) {
	ctx := context.Background()
	s := newStore(t)
	if got, err := s.AuditLog(ctx, 10); err != nil || len(got) != 0 {
		t.Fatalf("AuditLog on an empty store: got %v, %v", got, err)
	}
	start := time.Now().Add(-time.Minute)
	writes := []struct {
		action, subject string
		detail          any
		want            string
	}{
		{"rule.put", "key:acme", map[string]any{"id": "rule_1", "rate": []int{20}}, `{"id": "rule_1", "rate": [20]}`},
		{"quota.reset", "user:alice", nil, `{}`},
		{"rule.delete", "", struct {
			ID string `json:"id"`
		}{"rule_1"}, `{"id": "rule_1"}`},
	}
	for _, w := range writes {
		if err := s.Audit(ctx, "admin", w.action, w.subject, w.detail); err != nil {
			t.Fatalf("Audit(%s): %v", w.action, err)
		}
	}
	if err := s.Audit(ctx, "admin", "bad", "", make(chan int)); err == nil {
		t.Error("Audit with a detail JSON cannot encode: got nil error")
	}
	got, err := s.AuditLog(ctx, 2)
	if err != nil || len(got) != 2 {
		t.Fatalf("AuditLog(2): got %d entries, %v, want 2", len(got), err)
	}
	if got[0].Action != "rule.delete" || got[1].Action != "quota.reset" || got[0].ID <= got[1].ID {
		t.Errorf("AuditLog(2): got %s, %s, want the newest first: rule.delete, quota.reset", got[0].Action, got[1].Action)
	}
	all, err := s.AuditLog(ctx, 0)
	if err != nil || len(all) != 3 {
		t.Fatalf("AuditLog(0): got %d entries, %v, want all 3", len(all), err)
	}
	for i, e := range all {
		w := writes[len(writes)-1-i]
		if e.Actor != "admin" || e.Action != w.action || e.Subject != w.subject || !sameJSON(e.Detail, w.want) ||
			e.At.Before(start) || e.At.Location() != time.UTC {
			t.Errorf("entry %d: got %+v (detail %s), want %s %q %s", i, e, e.Detail, w.action, w.subject, w.want)
		}
		if _, err := json.Marshal(e); err != nil {
			t.Errorf("entry %d does not encode: %v", i, err)
		}
	}

	as, ok := s.(quota.AuditStore)
	if !ok {
		return
	}
	// Entries queued while the store was away: written later, in order,
	// each at the time of its change.
	then := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)
	var queued []quota.AuditEntry
	for i, sub := range []string{"key:k1", "key:k2"} {
		e, err := quota.NewAuditEntry(then.Add(time.Duration(i)*time.Second), "admin@127.0.0.1", "quota.reset", sub, map[string]any{"limits": []string{"daily"}})
		if err != nil {
			t.Fatal(err)
		}
		queued = append(queued, e)
	}
	if err := as.WriteAudit(ctx, queued); err != nil {
		t.Fatalf("WriteAudit: %v", err)
	}
	if err := as.WriteAudit(ctx, nil); err != nil {
		t.Errorf("WriteAudit of nothing: %v", err)
	}
	got, err = s.AuditLog(ctx, 3)
	if err != nil || len(got) != 3 {
		t.Fatalf("AuditLog(3) after WriteAudit: got %d entries, %v, want 3", len(got), err)
	}
	for i, w := range []quota.AuditEntry{queued[1], queued[0]} {
		e := got[i]
		if e.Key != w.Key || e.Action != w.Action || e.Subject != w.Subject || e.Actor != w.Actor || !e.At.Equal(w.At) || e.At.Location() != time.UTC ||
			!sameJSON(e.Detail, string(w.Detail)) || e.ID <= all[0].ID {
			t.Errorf("entry %d after WriteAudit: got %+v (detail %s), want %+v (detail %s) with a new id", i, e, e.Detail, w, w.Detail)
		}
	}
	runAuditKeys(t, newStore)
}

// runAuditKeys runs the idempotency-key part of RunAudit on fresh stores:
// an entry whose Key is stored is skipped, in one batch or a later
// write; entries alike but for their Key are each stored; entries
// without a Key are stored every time.
func runAuditKeys(t *testing.T, newStore func(t *testing.T) Audit) {
	at := time.Date(2026, 3, 10, 12, 0, 0, 123456000, time.UTC)
	// alike returns entries alike in every field but the Key, for subject.
	alike := func(t *testing.T, subject string, n int) []quota.AuditEntry {
		t.Helper()
		var es []quota.AuditEntry
		for range n {
			e, err := quota.NewAuditEntry(at, "admin@127.0.0.1", "quota.reset", subject, map[string]any{"limits": []string{"daily"}})
			if err != nil {
				t.Fatal(err)
			}
			if e.Key == "" || len(es) > 0 && e.Key == es[0].Key {
				t.Fatalf("NewAuditEntry: key %q, want a new one each time", e.Key)
			}
			es = append(es, e)
		}
		return es
	}
	for _, tc := range []struct {
		name   string
		writes func(t *testing.T) (writes [][]quota.AuditEntry, want []quota.AuditEntry)
	}{
		{"same entry twice in one batch", func(t *testing.T) ([][]quota.AuditEntry, []quota.AuditEntry) {
			a, b := alike(t, "key:k1", 1)[0], alike(t, "user:alice", 1)[0]
			return [][]quota.AuditEntry{{a, b, a, b}}, []quota.AuditEntry{a, b}
		}},
		{"batch retried after its commit", func(t *testing.T) ([][]quota.AuditEntry, []quota.AuditEntry) {
			// The retry carries a newer entry, queued meanwhile, alike to
			// the first but for its key: a second change.
			a, b := alike(t, "key:k1", 2), alike(t, "user:alice", 1)[0]
			return [][]quota.AuditEntry{{a[0], b}, {a[0], b, a[1]}}, []quota.AuditEntry{a[0], b, a[1]}
		}},
		{"alike but for the key", func(t *testing.T) ([][]quota.AuditEntry, []quota.AuditEntry) {
			a := alike(t, "key:k1", 3)
			return [][]quota.AuditEntry{{a[0], a[1]}, {a[2]}, {a[0], a[1], a[2]}}, a
		}},
		{"no key", func(t *testing.T) ([][]quota.AuditEntry, []quota.AuditEntry) {
			a := alike(t, "key:k1", 1)[0]
			a.Key = ""
			return [][]quota.AuditEntry{{a, a}, {a}}, []quota.AuditEntry{a, a, a}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := newStore(t)
			as, ok := s.(quota.AuditStore)
			if !ok {
				t.Skip("not a quota.AuditStore")
			}
			writes, want := tc.writes(t)
			for i, w := range writes {
				if err := as.WriteAudit(ctx, w); err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
			}
			got, err := s.AuditLog(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			slices.Reverse(got) // oldest first, as written
			if len(got) != len(want) {
				t.Fatalf("stored %d entries %s, want %d %s", len(got), auditKeys(got), len(want), auditKeys(want))
			}
			for i, w := range want {
				e := got[i]
				if e.Key != w.Key || e.Subject != w.Subject || !e.At.Equal(w.At) || !sameJSON(e.Detail, string(w.Detail)) ||
					i > 0 && e.ID <= got[i-1].ID {
					t.Errorf("entry %d: got %+v (detail %s), want %+v (detail %s), ids increasing", i, e, e.Detail, w, w.Detail)
				}
			}
		})
	}
}

// auditKeys returns the subjects and keys of es, for a failure message.
func auditKeys(es []quota.AuditEntry) string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s/%q", e.Subject, e.Key)
	}
	return "[" + b.String() + "]"
}

// sameJSON reports whether got and want hold the same JSON value,
// whatever their spacing.
func sameJSON(got []byte, want string) bool {
	var g, w any
	return json.Unmarshal(got, &g) == nil && json.Unmarshal([]byte(want), &w) == nil && reflect.DeepEqual(g, w)
}
