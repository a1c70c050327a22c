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
// increasing ids. newStore returns an empty store for one subtest and
// registers its cleanup with t.
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
}

// sameJSON reports whether got and want hold the same JSON value,
// whatever their spacing.
func sameJSON(got []byte, want string) bool {
	var g, w any
	return json.Unmarshal(got, &g) == nil && json.Unmarshal([]byte(want), &w) == nil && reflect.DeepEqual(g, w)
}
