package quotatest

import (
	"context"
	"encoding/json"
	"reflect"
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
// and the times of the entries WriteAudit is given. newStore returns an
// empty store for one subtest and registers its cleanup with t.
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
		if e.Action != w.Action || e.Subject != w.Subject || e.Actor != w.Actor || !e.At.Equal(w.At) || e.At.Location() != time.UTC ||
			!sameJSON(e.Detail, string(w.Detail)) || e.ID <= all[0].ID {
			t.Errorf("entry %d after WriteAudit: got %+v (detail %s), want %+v (detail %s) with a new id", i, e, e.Detail, w, w.Detail)
		}
	}
}

// sameJSON reports whether got and want hold the same JSON value,
// whatever their spacing.
func sameJSON(got []byte, want string) bool {
	var g, w any
	return json.Unmarshal(got, &g) == nil && json.Unmarshal([]byte(want), &w) == nil && reflect.DeepEqual(g, w)
}
