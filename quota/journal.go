package quota

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Violation is one refused request, or one a shadow limit would have
// refused, as the journal stores it.
type Violation struct {
	// ID is made by the replica that saw the violation ("<replica>-<seq>"),
	// so a retried write stores it once.
	ID string
	// At is when the request was decided, to the microsecond, in UTC.
	At time.Time
	// Subject, KeyID, User, Plan, Route, Method and Path are the
	// request's, as in Event.
	Subject, KeyID, User, Plan, Route, Method, Path string
	// LimitName, Limit, Window and Period describe the limit, as in
	// Violated: Window for rate limits, Period for quotas.
	LimitName string
	Limit     int64
	Window    time.Duration
	Period    string
	// Kind is RateLimited or QuotaExceeded: the refusal the limit made
	// or, for a shadow limit, would have made.
	Kind Outcome
	// Shadow marks a shadow limit: the request was allowed.
	Shadow bool
}

// Rollup is the count of requests of one subject on one route in one
// minute, by outcome. A JournalStore is given each replica's absolute
// counts; a JournalReader returns them summed over replicas, with
// Replica "".
type Rollup struct {
	// Minute is the minute's start, in UTC.
	Minute time.Time
	// Subject, Route and User are the requests'; Replica is the writer.
	Subject, Route, User, Replica string
	// Allowed, RateLimited and QuotaExceeded count requests by Outcome.
	Allowed, RateLimited, QuotaExceeded int64
}

// JournalStore is where a Journal writes: quota/pgstore or
// quota/boltstore. Implementations are safe for concurrent use and pass
// quotatest.RunJournal. A Journal gives them strings of valid UTF-8
// without NUL bytes, as PostgreSQL text requires.
type JournalStore interface {
	// WriteViolations stores violations, skipping those whose ID is
	// already stored, so a batch written twice is stored once. It does
	// not keep vs.
	WriteViolations(ctx context.Context, vs []Violation) error
	// WriteRollups stores each replica's absolute counts of a (Minute,
	// Subject, Route), keeping per count the highest value it was given:
	// counts only grow, so rewrites and retries, even out of order,
	// change nothing. It does not keep rs.
	WriteRollups(ctx context.Context, rs []Rollup) error
}

// ViolationQuery selects violations for JournalReader.Violations.
type ViolationQuery struct {
	// Subject, if set, selects one subject's violations.
	Subject string
	// Since (inclusive) and Until (exclusive) bound At; zero means
	// unbounded.
	Since, Until time.Time
	// Limit is the page size: zero or less means 100, more than 1000
	// means 1000.
	Limit int
	// Cursor is the next cursor of the previous page; "" starts at the
	// newest violation.
	Cursor string
}

// PageSize returns q.Limit clamped as documented.
func (q ViolationQuery) PageSize() int {
	switch {
	case q.Limit <= 0:
		return 100
	case q.Limit > 1000:
		return 1000
	}
	return q.Limit
}

// JournalReader is the query side of a JournalStore, for the admin API.
type JournalReader interface {
	// Violations returns the violations q selects, newest first (by At,
	// then ID, descending), and the cursor of the next page, "" after
	// the last one. A cursor that is not one it returned is an error
	// wrapping ErrBadCursor.
	Violations(ctx context.Context, q ViolationQuery) (list []Violation, next string, err error)
	// Rollups returns the roll-ups of minutes in [from, to), summed over
	// replicas per (Minute, Subject, Route, User), ordered by those
	// fields (strings bytewise). A zero from or to is unbounded.
	Rollups(ctx context.Context, from, to time.Time) ([]Rollup, error)
	// PruneJournal deletes violations and roll-ups older than before
	// and returns how many it deleted.
	PruneJournal(ctx context.Context, before time.Time) (int, error)
}

// ErrBadCursor reports a pagination cursor that JournalReader.Violations
// did not make.
var ErrBadCursor = errors.New("bad cursor")

// ViolationCursor returns the opaque cursor of the page after v: the
// base64 of At in unix nanoseconds (8 bytes, big-endian) and ID.
func ViolationCursor(v Violation) string {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(v.ID)), uint64(v.At.UnixNano()))
	return base64.RawURLEncoding.EncodeToString(append(b, v.ID...))
}

// ParseViolationCursor returns the At and ID a ViolationCursor encodes;
// the error names the cursor and wraps ErrBadCursor.
func ParseViolationCursor(s string) (at time.Time, id string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) <= 8 {
		return time.Time{}, "", fmt.Errorf("cursor %q: %w", s, ErrBadCursor)
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b))).UTC(), string(b[8:]), nil
}

// JournalOptions configure a Journal. The zero value is usable.
type JournalOptions struct {
	// Replica identifies this process in violation IDs and roll-ups. It
	// must differ between processes, restarts included, or a restarted
	// process's counts hide behind its predecessor's. "" means the host
	// name and a random suffix.
	Replica string
	// FlushInterval is how often Run writes to the store. Zero means 1s.
	FlushInterval time.Duration
	// MaxViolations bounds the violations waiting to be written; beyond
	// it violations are dropped and counted (roll-up counts never are).
	// Zero means 10000.
	MaxViolations int
	// WriteTimeout bounds one store write. Zero means 10s.
	WriteTimeout time.Duration
	// Logf receives operational logs. Nil means log.Printf.
	Logf func(format string, args ...any)
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
}

// JournalStats describe a Journal's backlog, for /metrics and /health.
type JournalStats struct {
	// PendingViolations are recorded and not yet written.
	PendingViolations int
	// PendingRollups are roll-up rows changed since they were written.
	PendingRollups int
	// DroppedViolations counts violations refused by a full buffer.
	DroppedViolations uint64
	// LastFlush is when the last successful flush ended; zero before it.
	LastFlush time.Time
	// Lag is the age of the oldest change not yet written; zero when
	// nothing is pending.
	Lag time.Duration
	// Healthy reports that the last write succeeded (true before the
	// first write).
	Healthy bool
	// Errors counts failed writes.
	Errors uint64
}

// keepMinutes is how many minutes before the current one keep their
// roll-ups in memory, for events that arrive late.
const keepMinutes = 2

// rollupKey identifies a roll-up row of this replica.
type rollupKey struct {
	minute         int64 // unix seconds
	subject, route string
}

// rollupRow is the absolute count of a row, by Outcome-1.
type rollupRow struct {
	user   string
	n      [3]int64
	dirty  bool // changed since it was taken for a write
	flying bool // being written
}

// Journal records what the proxy decided, off the request path:
// violations, and per-minute roll-ups of every limited request. Record
// updates memory; Run writes to the JournalStore every FlushInterval.
// Roll-ups are written as this replica's absolute counts, so a failed
// write is simply retried with the newer counts. Safe for concurrent use.
type Journal struct {
	store JournalStore
	o     JournalOptions

	flushMu sync.Mutex // one flush at a time

	mu       sync.Mutex
	rows     map[rollupKey]*rollupRow
	floor    int64 // minutes before it were evicted; later events count in it
	nDirty   int   // rows dirty
	nPending int   // rows dirty or flying
	viols    []Violation
	spare    []Violation // the other buffer: written batches are reused
	nFlying  int         // violations being written
	since    time.Time   // first change not yet taken for a write
	flying   time.Time   // oldest change being written
	busy     bool        // a write is in progress
	seq      uint64      // of the last violation given an ID; flushMu held
	f        flushing
}

// NewJournal returns a Journal writing to store; o may be nil.
func NewJournal(store JournalStore, o *JournalOptions) *Journal {
	j := &Journal{store: store, rows: map[rollupKey]*rollupRow{}}
	if o != nil {
		j.o = *o
	}
	if j.o.Replica == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "gaia"
		}
		b := make([]byte, 4)
		rand.Read(b)
		j.o.Replica = host + "-" + hex.EncodeToString(b)
	}
	if j.o.MaxViolations <= 0 {
		j.o.MaxViolations = 10000
	}
	j.f = newFlushing(flushText{what: "journal", pending: "violations and roll-ups", held: "violations", drops: "violations"}, j.o.FlushInterval, j.o.WriteTimeout, j.o.Logf, j.o.Now)
	return j
}

// Replica returns the replica name the Journal writes under.
func (j *Journal) Replica() string { return j.o.Replica }

// Record counts e in its minute's roll-up and, when e.Violated is set,
// buffers a violation. It never blocks on the store. An event older
// than the minutes kept in memory counts in the oldest kept minute, so
// a late event never overwrites a written count with a smaller one.
// Events without a known Outcome are ignored. Strings reach the store
// cleaned: valid UTF-8 without NUL bytes, at most 1 KiB.
func (j *Journal) Record(e Event) {
	if e.Outcome < Allowed || e.Outcome > QuotaExceeded {
		return
	}
	t := e.Time
	if t.IsZero() {
		t = j.f.now()
	}
	if e.Violated != nil {
		e.Method, e.Path = clip(e.Method), clip(e.Path)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.nDirty == 0 && len(j.viols) == 0 {
		j.since = j.f.now()
	}
	k := rollupKey{minute: max(t.Unix()-mod(t.Unix(), 60), j.floor), subject: e.Subject, route: e.Route}
	r := j.rows[k]
	if r == nil {
		r = &rollupRow{}
		j.rows[k] = r
	}
	if e.User != "" {
		r.user = e.User
	}
	r.n[e.Outcome-1]++
	if !r.dirty {
		r.dirty = true
		j.nDirty++
		if !r.flying {
			j.nPending++
		}
	}
	if e.Violated != nil {
		j.violation(e, t)
	}
}

// violation buffers e's violation; j.mu is held.
func (j *Journal) violation(e Event, t time.Time) {
	if n := len(j.viols) + j.nFlying; n >= j.o.MaxViolations {
		j.f.drop(n)
		return
	}
	kind := e.Outcome
	if kind == Allowed { // a shadow limit
		kind = RateLimited
		if e.Violated.Period != "" {
			kind = QuotaExceeded
		}
	}
	v := e.Violated
	j.viols = append(j.viols, Violation{
		At:      t.UTC().Truncate(time.Microsecond), // the ID is given by Flush
		Subject: e.Subject, KeyID: e.KeyID, User: e.User, Plan: e.Plan, Route: e.Route, Method: e.Method, Path: e.Path,
		LimitName: v.Name, Limit: v.Limit, Window: v.Window, Period: v.Period, Kind: kind, Shadow: v.Shadow,
	})
}

// maxField bounds the bytes kept of a request's string.
const maxField = 1024

// clip cuts s to maxField bytes, copied so that it does not pin the
// request's memory: a flood of huge paths must not hold megabytes each.
func clip(s string) string {
	if len(s) <= maxField {
		return s
	}
	return strings.Clone(s[:maxField])
}

// clean returns s as the stores get it: valid UTF-8 without NUL bytes
// (or PostgreSQL would refuse the whole batch, again at every retry),
// at most maxField bytes. Most strings come back as they are.
func clean(s string) string {
	ascii := len(s) <= maxField // and no NUL: the common case, checked fast
	for i := 0; ascii && i < len(s); i++ {
		ascii = s[i] != 0 && s[i] < utf8.RuneSelf
	}
	if ascii || len(s) <= maxField && utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	s = strings.ToValidUTF8(strings.ReplaceAll(s[:min(len(s), maxField)], "\x00", ""), "\uFFFD")
	if len(s) > maxField { // the replacements made it longer
		s = strings.ToValidUTF8(s[:maxField], "")
	}
	return s
}

// mod is a modulo that is never negative.
func mod(a, b int64) int64 { return ((a % b) + b) % b }

// Run flushes every FlushInterval until ctx is done. Errors are logged
// (the first failure and the recovery, one line each) and retried on
// the next tick. At shutdown, call Flush after Run returns.
func (j *Journal) Run(ctx context.Context) { j.f.run(ctx, j.Flush) }

// Flush writes the violations buffered and the roll-up rows changed
// since the last write, with their absolute counts, then forgets written
// minutes older than the two before the current one. On error the data
// stays pending for the next flush.
func (j *Journal) Flush(ctx context.Context) error {
	j.flushMu.Lock()
	defer j.flushMu.Unlock()

	j.mu.Lock()
	viols := j.viols
	j.viols, j.spare = j.spare[:0], nil
	rollups := make([]Rollup, 0, j.nDirty)
	rows := make([]*rollupRow, 0, j.nDirty)
	for k, r := range j.rows {
		if r.dirty {
			r.dirty, r.flying = false, true
			rows = append(rows, r)
			rollups = append(rollups, Rollup{Minute: time.Unix(k.minute, 0).UTC(), Subject: k.subject, Route: k.route,
				User: r.user, Replica: j.o.Replica, Allowed: r.n[0], RateLimited: r.n[1], QuotaExceeded: r.n[2]})
		}
	}
	j.nDirty, j.nFlying, j.flying, j.busy = 0, len(viols), j.since, len(viols)+len(rows) > 0
	j.mu.Unlock()
	for i := range viols {
		if v := &viols[i]; v.ID == "" { // not in a failed batch
			j.seq++
			v.ID = j.o.Replica + "-" + strconv.FormatUint(j.seq, 10)
			v.Subject, v.KeyID, v.User, v.Plan, v.Route = clean(v.Subject), clean(v.KeyID), clean(v.User), clean(v.Plan), clean(v.Route)
			v.Method, v.Path, v.LimitName, v.Period = clean(v.Method), clean(v.Path), clean(v.LimitName), clean(v.Period)
		}
	}
	for i := range rollups { // rows are keyed by the strings as recorded
		r := &rollups[i]
		r.Subject, r.Route, r.User = clean(r.Subject), clean(r.Route), clean(r.User)
	}

	write := func(what string, n int, f func(context.Context) error) error {
		if n == 0 {
			return nil
		}
		if err := j.f.bounded(ctx, f); err != nil {
			return fmt.Errorf("write %d %s: %w", n, what, err)
		}
		return nil
	}
	verr := write("violations", len(viols), func(ctx context.Context) error { return j.store.WriteViolations(ctx, viols) })
	rerr := write("roll-ups", len(rollups), func(ctx context.Context) error { return j.store.WriteRollups(ctx, rollups) })
	nv := len(viols)
	if verr == nil {
		clear(viols) // let the strings go
	}

	j.mu.Lock()
	defer j.mu.Unlock()
	defer j.evict()
	for _, r := range rows {
		r.flying = false
		switch {
		case r.dirty: // changed while being written: still pending
		case rerr != nil: // failed: write again
			r.dirty = true
			j.nDirty++
		default:
			j.nPending--
		}
	}
	j.nFlying, j.busy = 0, false
	if verr != nil { // older than those recorded since: first
		viols, j.viols = j.viols, append(viols, j.viols...)
		clear(viols)
	}
	j.spare = viols[:0]
	if err := errors.Join(verr, rerr); err != nil {
		j.since = j.flying
		err = fmt.Errorf("quota: journal: %w", err)
		j.f.result(ctx, err, nil)
		return err
	}
	j.f.result(ctx, nil, func() string { return fmt.Sprintf("%d violations and %d roll-ups written", nv, len(rollups)) })
	return nil
}

// evict forgets the rows of minutes before the two preceding the
// current one once they are written; j.mu is held.
func (j *Journal) evict() {
	now := j.f.now().Unix()
	j.floor = max(j.floor, now-mod(now, 60)-keepMinutes*60)
	for k, r := range j.rows {
		if k.minute < j.floor && !r.dirty && !r.flying {
			delete(j.rows, k)
		}
	}
}

// Stats returns the Journal's backlog.
func (j *Journal) Stats() JournalStats {
	j.mu.Lock()
	defer j.mu.Unlock()
	s := JournalStats{PendingViolations: len(j.viols) + j.nFlying, PendingRollups: j.nPending,
		DroppedViolations: j.f.dropped, LastFlush: j.f.last, Healthy: !j.f.failed, Errors: j.f.errors}
	oldest := j.since
	if j.busy {
		oldest = j.flying
	}
	if s.PendingViolations+s.PendingRollups > 0 {
		s.Lag = j.f.now().Sub(oldest)
	}
	return s
}
