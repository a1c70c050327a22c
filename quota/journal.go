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
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gaia-proxy/gaia-proxy/internal/credential"
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
// the error names the cursor and wraps ErrBadCursor. An ID that is not
// text (credential.IsText), which every violation's is and a database
// needs, is a bad cursor.
func ParseViolationCursor(s string) (at time.Time, id string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) <= 8 {
		return time.Time{}, "", fmt.Errorf("cursor %q: %w", s, ErrBadCursor)
	}
	id = string(b[8:])
	if !credential.IsText(id) {
		return time.Time{}, "", fmt.Errorf("cursor %q: %w", s, ErrBadCursor)
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b))).UTC(), id, nil
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
	// MaxRollups bounds the roll-up rows changed and not yet written.
	// When a change would exceed it, the pending rows of the oldest
	// minute are dropped and counted: a minute is kept whole or not at
	// all, and the newest minutes are kept. Zero means 100000 (about
	// 30 MB), which a database writing 50k rows a second lands in 2 s.
	MaxRollups int
	// MaxAudits bounds the audit entries waiting to be written (see
	// Audit); beyond it an entry is dropped, counted and logged. Zero
	// means 1000.
	MaxAudits int
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
	// DroppedRollups counts roll-up rows of minutes dropped from a full
	// backlog.
	DroppedRollups uint64
	// PendingAudits are audit entries queued and not yet written.
	PendingAudits int
	// DroppedAudits counts audit entries refused by a full buffer.
	DroppedAudits uint64
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

// writeChunk is the most rows one store write is given: a backlog is
// written in chunks, each well inside WriteTimeout (10k roll-ups take
// about 0.2 s on PostgreSQL), so a large one drains rather than timing
// out at every retry.
const writeChunk = 10000

// copyBatch is the most roll-up rows Flush copies per hold of j.mu,
// which Record waits for.
const copyBatch = 1024

// rollupKey identifies a roll-up row of this replica in its minute.
type rollupKey struct{ subject, route string }

// minuteRows are the roll-up rows of one minute.
type minuteRows struct {
	start   int64 // unix seconds
	rows    map[rollupKey]*rollupRow
	pending int // rows dirty or flying
}

// rollupRow is the absolute count of a row, by Outcome-1.
type rollupRow struct {
	min     *minuteRows
	key     rollupKey
	user    string
	n       [3]int64
	dirty   bool // changed since it was taken for a write: in j.dirty
	flying  bool // being written
	dropped bool // forgotten for a full backlog; j.dirty may still hold it
}

// rollup returns r as written by replica; j.mu is held.
func (r *rollupRow) rollup(replica string) Rollup {
	return Rollup{Minute: time.Unix(r.min.start, 0).UTC(), Subject: r.key.subject, Route: r.key.route, User: r.user,
		Replica: replica, Allowed: r.n[0], RateLimited: r.n[1], QuotaExceeded: r.n[2]}
}

// Journal records what the proxy decided, off the request path:
// violations, and per-minute roll-ups of every limited request. Record
// updates memory; Run writes to the JournalStore every FlushInterval.
// Roll-ups are written as this replica's absolute counts, so a failed
// write is simply retried with the newer counts. It also carries the
// audit log's entries that the store could not take at once (see Audit).
// Safe for concurrent use.
type Journal struct {
	store JournalStore
	o     JournalOptions

	flushMu sync.Mutex // one flush at a time

	mu       sync.Mutex
	mins     map[int64]*minuteRows // by start
	last     *minuteRows           // the one Record used last, or nil
	floor    int64                 // minutes before it were evicted; later events count in it
	dirty    []*rollupRow          // rows to write, oldest change first, dropped ones too
	nPending int                   // rows dirty or flying, not dropped
	viols    []Violation
	spare    []Violation // the other buffer: written batches are reused
	nFlying  int         // violations being written
	since    time.Time   // no change before it is pending
	seq      uint64      // of the last violation given an ID; flushMu held
	f        flushing
	rfull    bool   // dropping roll-ups: logged once per episode
	rlost    uint64 // roll-up rows dropped in this episode
	rdropped uint64 // roll-up rows dropped

	astore   AuditStore   // nil when the store keeps no audit log
	audits   []AuditEntry // queued, oldest first
	nAFlying int          // audit entries being written
	adropped uint64       // audit entries dropped
}

// NewJournal returns a Journal writing to store; o may be nil.
func NewJournal(store JournalStore, o *JournalOptions) *Journal {
	j := &Journal{store: store, mins: map[int64]*minuteRows{}}
	j.astore, _ = store.(AuditStore)
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
	if j.o.MaxRollups <= 0 {
		j.o.MaxRollups = 100000
	}
	if j.o.MaxAudits <= 0 {
		j.o.MaxAudits = 1000
	}
	j.f = newFlushing(flushText{what: "journal", pending: "violations, roll-ups and audit entries", held: "violations", drops: "violations"}, j.o.FlushInterval, j.o.WriteTimeout, j.o.Logf, j.o.Now)
	return j
}

// Replica returns the replica name the Journal writes under.
func (j *Journal) Replica() string { return j.o.Replica }

// Record counts e in its minute's roll-up and, when e.Violated is set,
// buffers a violation. It never blocks on the store. An event older
// than the minutes kept in memory counts in the oldest kept minute, so
// a late event never overwrites a written count with a smaller one.
// Events without a known Outcome are ignored. Strings reach the store
// cleaned: valid UTF-8 without NUL bytes, at most 1 KiB. When MaxRollups
// rows are pending, the oldest minute's pending rows are dropped.
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
	if j.idle() {
		j.since = j.f.now()
	}
	start := max(t.Unix()-mod(t.Unix(), 60), j.floor)
	m := j.last
	if m == nil || m.start != start {
		if m = j.mins[start]; m == nil {
			m = &minuteRows{start: start, rows: map[rollupKey]*rollupRow{}}
			j.mins[start] = m
		}
		j.last = m
	}
	k := rollupKey{e.Subject, e.Route}
	r := m.rows[k]
	if r == nil || !r.dirty && !r.flying { // a row becomes pending
		if j.nPending >= j.o.MaxRollups {
			j.dropOldest()
			r = m.rows[k] // gone if its minute was dropped
		}
		if r == nil {
			r = &rollupRow{min: m, key: k}
			m.rows[k] = r
		}
		j.nPending++
		m.pending++
	}
	if e.User != "" {
		r.user = e.User
	}
	r.n[e.Outcome-1]++
	if !r.dirty {
		r.dirty = true
		j.dirty = append(j.dirty, r)
	}
	if e.Violated != nil {
		j.violation(e, t)
	}
}

// dropOldest drops the pending rows of the oldest minute that has any,
// counts them and logs the first drop of an episode; j.mu is held. A
// minute before the floor leaves memory whole: no event counts in it.
func (j *Journal) dropOldest() {
	var m *minuteRows
	for _, c := range j.mins {
		if c.pending > 0 && (m == nil || c.start < m.start) {
			m = c
		}
	}
	if m == nil {
		return
	}
	n := uint64(m.pending)
	if !j.rfull {
		j.rfull = true
		j.f.logf("%s roll-up backlog full (%d rows): dropping the oldest minutes until the store catches up", j.f.what, j.nPending)
	}
	j.rdropped += n
	j.rlost += n
	j.nPending -= m.pending
	m.pending = 0
	for k, r := range m.rows {
		if r.dirty || r.flying {
			r.dropped, r.dirty = true, false
			delete(m.rows, k)
		}
	}
	if m.start < j.floor {
		j.forget(m)
	}
	if len(j.dirty) > 2*j.o.MaxRollups { // dropped rows linger there
		j.dirty = slices.DeleteFunc(j.dirty, func(r *rollupRow) bool { return r.dropped })
	}
}

// idle reports that nothing is pending; j.mu is held.
func (j *Journal) idle() bool {
	return j.nPending == 0 && len(j.viols)+j.nFlying == 0 && len(j.audits)+j.nAFlying == 0
}

// auditWait bounds Audit's own write, which a request waits for: a store
// slower than that gets the entry from the queue.
const auditWait = 2 * time.Second

// Audit writes e to the audit log (SPEC §5: admin changes are audited).
// When no entry waits before it and writes are not failing, it writes e
// at once, within ctx and at most auditWait; otherwise, or when that
// write fails, it queues e, and Flush writes the queue, oldest first,
// the failed entry included, until a write succeeds: an entry made while
// the store is away lands when it returns (or at shutdown's last Flush).
// The queue holds MaxAudits entries; beyond it e is dropped, counted in
// DroppedAudits and returned as an error, as it is when the store keeps
// no audit log. Strings reach the store cleaned, as in Record, and At
// (now when zero) to the microsecond. An entry without a Key gets a new
// one here, before its first write, and every write of it carries that
// Key, so the store keeps it once however often it is retried.
func (j *Journal) Audit(ctx context.Context, e AuditEntry) error {
	if j.astore == nil {
		return fmt.Errorf("quota: journal: audit %s %s by %s: the store keeps no audit log", e.Action, e.Subject, e.Actor)
	}
	e = cleanAudit(e, j.f.now)
	j.mu.Lock()
	direct := len(j.audits)+j.nAFlying == 0 && !j.f.failed // else e would pass entries queued before it
	j.mu.Unlock()
	if direct {
		wctx, cancel := context.WithTimeout(ctx, min(auditWait, j.f.timeout))
		err := j.astore.WriteAudit(wctx, []AuditEntry{e})
		cancel()
		if err == nil {
			return nil
		}
		j.f.logf("%s: audit entry %s %s by %s not written (%v): queued, it is written when the store takes writes again", j.f.what, e.Action, e.Subject, e.Actor, err)
		j.mu.Lock()
		defer j.mu.Unlock()
		// Failing from now on, in the same hold of the lock as e joins the
		// queue: an entry made meanwhile queues behind e, not before it.
		j.f.result(ctx, fmt.Errorf("quota: journal: %w", err), nil)
		j.f.soon() // Run retries every second from now, not from its next tick
	} else {
		j.mu.Lock()
		defer j.mu.Unlock()
	}
	if n := len(j.audits) + j.nAFlying; n >= j.o.MaxAudits {
		j.adropped++
		return fmt.Errorf("quota: journal: audit buffer full (%d entries waiting for the store): %s %s by %s dropped", n, e.Action, e.Subject, e.Actor)
	}
	if j.idle() {
		j.since = j.f.now()
	}
	j.audits = append(j.audits, e)
	return nil
}

// forget removes minute m; j.mu is held.
func (j *Journal) forget(m *minuteRows) {
	delete(j.mins, m.start)
	if j.last == m {
		j.last = nil
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
	// A flood fills the buffer faster than the interval empties it: half
	// full, a healthy store is written at once rather than at the next
	// tick, so the buffer bounds what waits, not what is kept a second.
	if len(j.viols) == j.o.MaxViolations/2 && !j.f.failed {
		j.f.soon()
	}
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

// Flush writes the audit entries queued, the violations buffered and
// the roll-up rows changed since the last write, with their absolute
// counts, then forgets written minutes older than the two before the
// current one. A backlog is written in chunks of writeChunk rows, each
// copied when its turn comes, copyBatch rows per hold of the lock Record
// takes, so Record never waits long. On error, what was not written
// stays pending for the next flush.
func (j *Journal) Flush(ctx context.Context) error {
	j.flushMu.Lock()
	defer j.flushMu.Unlock()

	start := j.f.now()
	j.mu.Lock()
	audits := j.audits
	j.audits = nil
	j.nAFlying = len(audits)
	viols := j.viols
	j.viols, j.spare = j.spare[:0], nil
	j.nFlying = len(viols)
	todo := len(j.dirty) // changed before start; later changes wait for the next flush
	j.mu.Unlock()
	for i := range viols {
		if v := &viols[i]; v.ID == "" { // not in a failed batch
			j.seq++
			v.ID = j.o.Replica + "-" + strconv.FormatUint(j.seq, 10)
			v.Subject, v.KeyID, v.User, v.Plan, v.Route = clean(v.Subject), clean(v.KeyID), clean(v.User), clean(v.Plan), clean(v.Route)
			v.Method, v.Path, v.LimitName, v.Period = clean(v.Method), clean(v.Path), clean(v.LimitName), clean(v.Period)
		}
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
	// Audit entries first: few, and the ones that matter most.
	aerr := write("audit entries", len(audits), func(ctx context.Context) error { return j.astore.WriteAudit(ctx, audits) })
	var verr error
	for i := 0; i < len(viols) && verr == nil; i += writeChunk {
		vs := viols[i:min(i+writeChunk, len(viols))]
		verr = write("violations", len(vs), func(ctx context.Context) error { return j.store.WriteViolations(ctx, vs) })
	}
	var (
		rerr error
		nr   int // roll-ups written
		rows []*rollupRow
		rs   []Rollup
	)
	for todo > 0 && rerr == nil {
		rows, rs = j.take(&todo, rows[:0], rs[:0])
		for i := range rs { // rows are keyed by the strings as recorded
			r := &rs[i]
			r.Subject, r.Route, r.User = clean(r.Subject), clean(r.Route), clean(r.User)
		}
		rerr = write("roll-ups", len(rs), func(ctx context.Context) error { return j.store.WriteRollups(ctx, rs) })
		j.mu.Lock()
		j.landed(rows, rerr == nil)
		j.mu.Unlock()
		if rerr == nil {
			nr += len(rows)
		}
	}
	nv := len(viols)
	if verr == nil {
		clear(viols) // let the strings go
	}

	j.mu.Lock()
	defer j.mu.Unlock()
	defer j.evict()
	j.nFlying, j.nAFlying = 0, 0
	if aerr != nil { // older than those queued since: first
		j.audits = append(audits, j.audits...)
	}
	if verr != nil { // older than those recorded since: first
		viols, j.viols = j.viols, append(viols, j.viols...)
		clear(viols)
	}
	j.spare = viols[:0]
	if err := errors.Join(aerr, verr, rerr); err != nil {
		err = fmt.Errorf("quota: journal: %w", err)
		j.f.result(ctx, err, nil)
		return err
	}
	j.since = start // what changed before it is written
	if j.rfull {
		j.rfull = false
		j.f.logf("%s roll-up backlog drained: %d roll-up rows were dropped while it was full", j.f.what, j.rlost)
		j.rlost = 0
	}
	j.f.result(ctx, nil, func() string {
		if len(audits) > 0 {
			return fmt.Sprintf("%d audit entries, %d violations and %d roll-ups written", len(audits), nv, nr)
		}
		return fmt.Sprintf("%d violations and %d roll-ups written", nv, nr)
	})
	return nil
}

// take moves rows from the front of j.dirty to a write, up to
// writeChunk of them and *todo entries, and returns them with their
// roll-ups appended to rows and rs. It holds j.mu for copyBatch entries
// at a time.
func (j *Journal) take(todo *int, rows []*rollupRow, rs []Rollup) ([]*rollupRow, []Rollup) {
	for *todo > 0 && len(rows) < writeChunk {
		j.mu.Lock()
		for n := 0; n < copyBatch && *todo > 0 && len(rows) < writeChunk && len(j.dirty) > 0; n++ {
			r := j.dirty[0]
			j.dirty[0], j.dirty = nil, j.dirty[1:]
			*todo--
			switch {
			case r.dropped:
			case r.flying: // taken for this chunk and changed since: next time
				j.dirty = append(j.dirty, r)
			default:
				r.dirty, r.flying = false, true
				rows = append(rows, r)
				rs = append(rs, r.rollup(j.o.Replica))
			}
		}
		if len(j.dirty) == 0 {
			*todo = 0
		}
		j.mu.Unlock()
	}
	return rows, rs
}

// landed ends the write of rows, which succeeded if ok; j.mu is held.
func (j *Journal) landed(rows []*rollupRow, ok bool) {
	for _, r := range rows {
		r.flying = false
		switch {
		case r.dropped: // no longer counted
		case r.dirty: // changed while being written: still pending
		case !ok: // write again
			r.dirty = true
			j.dirty = append(j.dirty, r)
		default:
			j.nPending--
			r.min.pending--
		}
	}
}

// evict forgets the minutes before the two preceding the current one
// once their rows are written; j.mu is held. Before then they keep
// their written rows too, at most the minutes recent when writes began
// to fail.
func (j *Journal) evict() {
	now := j.f.now().Unix()
	j.floor = max(j.floor, now-mod(now, 60)-keepMinutes*60)
	for _, m := range j.mins {
		if m.start < j.floor && m.pending == 0 {
			j.forget(m)
		}
	}
}

// Stats returns the Journal's backlog.
func (j *Journal) Stats() JournalStats {
	j.mu.Lock()
	defer j.mu.Unlock()
	s := JournalStats{PendingViolations: len(j.viols) + j.nFlying, PendingRollups: j.nPending, DroppedViolations: j.f.dropped,
		DroppedRollups: j.rdropped, PendingAudits: len(j.audits) + j.nAFlying, DroppedAudits: j.adropped,
		LastFlush: j.f.last, Healthy: !j.f.failed, Errors: j.f.errors}
	if !j.idle() {
		s.Lag = j.f.now().Sub(j.since)
	}
	return s
}
