package quota_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

// auditJournalStore is a fakeJournalStore that keeps an audit log too:
// entries in the order written, how many writes it was asked for, and
// the keys of each write, failed ones included; writes fail while fail
// is set.
type auditJournalStore struct {
	fakeJournalStore
	mu      sync.Mutex
	entries []quota.AuditEntry
	calls   int
	keys    [][]string
	fail    error
}

func (s *auditJournalStore) WriteAudit(ctx context.Context, es []quota.AuditEntry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	var keys []string
	for _, e := range es {
		keys = append(keys, e.Key)
	}
	s.keys = append(s.keys, keys)
	if s.fail != nil {
		return s.fail
	}
	s.entries = append(s.entries, es...)
	return nil
}

func (s *auditJournalStore) setFail(err error) {
	s.mu.Lock()
	s.fail = err
	s.mu.Unlock()
}

// written returns the actions and subjects written, in order, and how
// many writes were asked for.
func (s *auditJournalStore) written() (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var got []string
	for _, e := range s.entries {
		got = append(got, e.Action+" "+e.Subject)
	}
	return strings.Join(got, ", "), s.calls
}

func newAuditJournal(t *testing.T, o *quota.JournalOptions) (*quota.Journal, *auditJournalStore, *logs) {
	t.Helper()
	_, fs := newJournalDB()
	s := &auditJournalStore{fakeJournalStore: *fs}
	j, _, lg := newJournal(t, s, o)
	return j, s, lg
}

func entry(t *testing.T, action, subject string, detail any) quota.AuditEntry {
	t.Helper()
	e, err := quota.NewAuditEntry(at(0, 30), "admin@127.0.0.1", action, subject, detail)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestJournalAuditQueuesWhileStoreAway: an audit entry the store cannot
// take is queued, later ones queue behind it without a write of their
// own, and Flush writes them, in order, once the store is back; then
// entries are written at once again.
func TestJournalAuditQueuesWhileStoreAway(t *testing.T) {
	ctx := context.Background()
	j, s, lg := newAuditJournal(t, nil)
	if err := j.Audit(ctx, entry(t, "rule.put", "key:a", nil)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.written(); got != "rule.put key:a" {
		t.Fatalf("with the store up: written %q, want the entry at once", got)
	}

	s.setFail(errors.New("connection refused"))
	for _, sub := range []string{"key:k1", "key:k2"} {
		if err := j.Audit(ctx, entry(t, "quota.reset", sub, nil)); err != nil {
			t.Fatalf("Audit while the store is away: %v, want it queued", err)
		}
	}
	if _, calls := s.written(); calls != 2 {
		t.Errorf("%d writes, want 2: the second entry queues behind the first without a write", calls)
	}
	if st := j.Stats(); st.PendingAudits != 2 || st.Healthy {
		t.Errorf("Stats: got %+v, want 2 audit entries pending, unhealthy", st)
	}
	if n := lg.count("queued"); n != 1 {
		t.Errorf("%d log lines say an entry was queued, want 1", n)
	}
	if err := j.Flush(ctx); err == nil {
		t.Fatal("Flush with the store away: nil error")
	}

	s.setFail(nil)
	flushJournal(t, j)
	if got, _ := s.written(); got != "rule.put key:a, quota.reset key:k1, quota.reset key:k2" {
		t.Errorf("after the store's return: written %q, want the queued entries in order", got)
	}
	if st := j.Stats(); st.PendingAudits != 0 || !st.Healthy || st.DroppedAudits != 0 {
		t.Errorf("Stats after Flush: got %+v, want nothing pending, healthy", st)
	}
	if err := j.Audit(ctx, entry(t, "rule.delete", "key:a", nil)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.written(); !strings.HasSuffix(got, "rule.delete key:a") {
		t.Errorf("after recovery: written %q, want the new entry at once", got)
	}
}

// TestJournalAuditBounded: past MaxAudits entries waiting, an entry is
// dropped, counted and returned as an error.
func TestJournalAuditBounded(t *testing.T) {
	ctx := context.Background()
	j, s, _ := newAuditJournal(t, &quota.JournalOptions{MaxAudits: 2})
	s.setFail(errors.New("down"))
	for i, sub := range []string{"key:1", "key:2", "key:3"} {
		err := j.Audit(ctx, entry(t, "quota.reset", sub, nil))
		if (err != nil) != (i == 2) {
			t.Errorf("Audit %d: error %v, want one for the third only", i, err)
		}
	}
	if st := j.Stats(); st.PendingAudits != 2 || st.DroppedAudits != 1 {
		t.Errorf("Stats: got %+v, want 2 pending and 1 dropped", st)
	}
	s.setFail(nil)
	flushJournal(t, j)
	if got, _ := s.written(); got != "quota.reset key:1, quota.reset key:2" {
		t.Errorf("written %q, want the two kept", got)
	}
}

// TestJournalAuditNoStore: a store that keeps no audit log is an error,
// not a silent loss.
func TestJournalAuditNoStore(t *testing.T) {
	_, s := newJournalDB()
	j, _, _ := newJournal(t, s, nil)
	if err := j.Audit(context.Background(), entry(t, "quota.reset", "key:k1", nil)); err == nil {
		t.Error("Audit on a store without an audit log: nil error")
	}
}

// TestJournalAuditCleaned: an entry reaches the store as PostgreSQL takes
// it, or it would be retried forever: no NUL in its strings or detail.
func TestJournalAuditCleaned(t *testing.T) {
	j, s, _ := newAuditJournal(t, nil)
	e := entry(t, "quota.reset", "user:a\x00b", map[string]any{"limits": []string{"x\x00y"}, "k\x00": 1})
	if err := j.Audit(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	got := s.entries[0]
	var detail map[string]any
	if got.Subject != "user:ab" || strings.Contains(string(got.Detail), `\u0000`) || json.Unmarshal(got.Detail, &detail) != nil ||
		detail["k"] != 1.0 || !got.At.Equal(at(0, 30)) {
		t.Errorf("stored %+v (detail %s), want NUL removed", got, got.Detail)
	}
}

// TestJournalAuditKey: an entry keeps its Key through every write of
// it, the failed direct one, the queue's failed and successful retries;
// an entry without one gets a new one, so two changes alike in every
// other field are two entries to the store.
func TestJournalAuditKey(t *testing.T) {
	ctx := context.Background()
	j, s, _ := newAuditJournal(t, nil)
	s.setFail(errors.New("connection refused"))
	e := entry(t, "quota.reset", "key:k1", nil)
	if e.Key == "" {
		t.Fatal("NewAuditEntry: empty key")
	}
	noKey := e
	noKey.Key = ""
	for _, a := range []quota.AuditEntry{e, noKey, noKey} {
		if err := j.Audit(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Flush(ctx); err == nil {
		t.Fatal("Flush with the store away: nil error")
	}
	s.setFail(nil)
	flushJournal(t, j)

	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.keys) != 3 || len(s.keys[0]) != 1 || len(s.keys[1]) != 3 || len(s.keys[2]) != 3 {
		t.Fatalf("writes of keys %q, want the direct write of one entry, then two of the queue of three", s.keys)
	}
	k := s.keys[2]
	if k[0] != e.Key || s.keys[0][0] != e.Key || len(k[1]) != 32 || len(k[2]) != 32 || k[1] == k[2] || k[1] == e.Key {
		t.Errorf("keys written %q, want %s kept and two new, distinct keys (32 hex digits) for the entries without one", s.keys, e.Key)
	}
	if s.keys[1][1] != k[1] || s.keys[1][2] != k[2] {
		t.Errorf("keys of the failed retry %q, then of the successful one %q: want the same", s.keys[1], k)
	}
	if len(s.entries) != 3 {
		t.Errorf("%d entries written, want 3", len(s.entries))
	}
}

// TestJournalAuditKeyCleaned: a key the stores could not index (too long,
// NUL, invalid UTF-8) is replaced by its SHA-256, the same for every
// write of it.
func TestJournalAuditKeyCleaned(t *testing.T) {
	j, s, _ := newAuditJournal(t, nil)
	for _, key := range []string{strings.Repeat("k", 4000), "a\x00b", "\xff"} {
		e := entry(t, "quota.reset", "key:k1", nil)
		e.Key = key
		for range 2 {
			if err := j.Audit(context.Background(), e); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := 0; i < len(s.entries); i += 2 {
		a, b := s.entries[i].Key, s.entries[i+1].Key
		if len(a) != 64 || a != b {
			t.Errorf("entry %d: keys %q and %q, want one SHA-256 in hex", i/2, a, b)
		}
	}
}
