package admin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

// StreamOptions configure the live stream, WS /ws/admin/quotas (SPEC §5).
// The zero value is usable.
//
// The stream sends JSON text messages {"type":...,"at":"RFC3339","data":
// {...}}, of these types:
//
//   - heartbeat, on connect and every HeartbeatInterval: {"replica":"..."}.
//   - stats, on connect (the latest) and every StatsInterval, summed over
//     the replicas: {"interval_seconds":5,"requests":N,"rate":R,
//     "allowed":N,"rate_limited":N,"quota_exceeded":N,
//     "limiter_unavailable":N,"unauthorized":N,"exempt":N,
//     "active_subjects":N,"replicas":N,"redis":{Check},"database":{Check}}.
//   - violation, as each happens: {"subject","key","user","plan","route",
//     "method","path","kind":"rate_limited"|"quota_exceeded","shadow",
//     "limit":{"name","limit","window"|"period"},"replica"}.
//   - violations_dropped: {"count":N}, the violations not sent one by one
//     (past ViolationRate, or a full queue) since the last one.
//   - alert, when one fires or resolves: see Alert.
//
// Clients may send anything (it is ignored); it counts as life, as do
// pongs.
type StreamOptions struct {
	// Bus carries the stream between replicas, so that each replica's
	// stream shows the whole cluster. Nil means this replica alone.
	Bus Bus
	// Replica names this process on the Bus; it must differ between
	// processes (pass the Journal's). "" means the host name and a random
	// suffix.
	Replica string
	// StatsInterval is how often clients get a stats message. Zero means 5s.
	StatsInterval time.Duration
	// HeartbeatInterval is how often each client gets a heartbeat message
	// and a ping. Zero means 10s.
	HeartbeatInterval time.Duration
	// SilenceTimeout closes a client that sent nothing, neither a message
	// nor a pong, for that long. Zero means 30s.
	SilenceTimeout time.Duration
	// ViolationRate is how many violation messages per second each client
	// gets, and this replica publishes on the Bus. Violations past it are
	// counted and summarised in violations_dropped messages. Zero means 50.
	ViolationRate int
	// SendBuffer is how many messages may wait for each client; messages
	// that do not fit are dropped and counted. Zero means 64.
	SendBuffer int
	// OriginPatterns are the browser origins allowed to open the stream
	// besides the admin port's own host (coder/websocket's
	// AcceptOptions.OriginPatterns: "dash.example.com", "*.example.com").
	// Clients that send no Origin (not browsers) are always allowed.
	OriginPatterns []string
}

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Replica == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "gaia"
		}
		b := make([]byte, 4)
		rand.Read(b)
		o.Replica = host + "-" + hex.EncodeToString(b)
	}
	setDefault(&o.StatsInterval, 5*time.Second)
	setDefault(&o.HeartbeatInterval, 10*time.Second)
	setDefault(&o.SilenceTimeout, 30*time.Second)
	setDefault(&o.ViolationRate, 50)
	setDefault(&o.SendBuffer, 64)
	return o
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Alert is the data of an "alert" message, sent when an alert fires or
// resolves: {"type":"alert","at":"...","data":{"id":"...","rule":
// "violation-burst","state":"firing","value":130,"threshold":100,...}}.
type Alert struct {
	// ID identifies one firing of a rule, the same when it resolves.
	ID string `json:"id"`
	// Rule is the alert rule's name (config alerts[].name).
	Rule string `json:"rule"`
	// State is "firing" or "resolved".
	State string `json:"state"`
	// Condition is the rule's condition: "violations_per_minute > 100".
	Condition string `json:"condition,omitempty"`
	// Value is the measured value that crossed (or fell back under) the
	// threshold; Threshold is the rule's.
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	// Subject is set for rules on one subject (quota_used_pct).
	Subject string `json:"subject,omitempty"`
	// Message is a sentence for people.
	Message string `json:"message,omitempty"`
	// Since is when the alert began firing.
	Since time.Time `json:"since"`
}

// liveMessage is every message of the stream.
type liveMessage struct {
	Type string    `json:"type"`
	At   time.Time `json:"at"`
	Data any       `json:"data"`
}

func encodeMessage(typ string, at time.Time, data any) []byte {
	b, err := json.Marshal(liveMessage{Type: typ, At: at.UTC(), Data: data})
	if err != nil {
		panic("admin: encode " + typ + ": " + err.Error()) // our own types
	}
	return b
}

// liveViolation is the data of a violation message.
type liveViolation struct {
	Subject string         `json:"subject"`
	KeyID   string         `json:"key_id,omitempty"`
	User    string         `json:"user,omitempty"`
	Plan    string         `json:"plan,omitempty"`
	Route   string         `json:"route,omitempty"`
	Method  string         `json:"method,omitempty"`
	Path    string         `json:"path,omitempty"`
	Kind    string         `json:"kind"` // "rate_limited" or "quota_exceeded"
	Shadow  bool           `json:"shadow"`
	Limit   quota.LimitRef `json:"limit"`
	Replica string         `json:"replica"`
}

// busViolation is a violation on the Bus.
type busViolation struct {
	At time.Time `json:"at"`
	liveViolation
}

// Bounds on the strings a violation carries; the bus message must fit
// MaxBusMessage.
const maxViolationField, maxViolationPath = 200, 1024

func trimTo(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func violationOf(e *quota.Event, replica string) busViolation {
	v := e.Violated
	kind := quota.RateLimited.String()
	if v.Period != "" {
		kind = quota.QuotaExceeded.String()
	}
	f := func(s string) string { return trimTo(s, maxViolationField) }
	return busViolation{At: e.Time, liveViolation: liveViolation{
		Subject: f(e.Subject), KeyID: f(e.KeyID), User: f(e.User), Plan: f(e.Plan), Route: f(e.Route),
		Method: f(e.Method), Path: trimTo(e.Path, maxViolationPath),
		Kind: kind, Shadow: v.Shadow, Limit: quota.RefOf(v.Name, v.Limit, v.Window, v.Period), Replica: replica,
	}}
}

// liveCounts are requests by outcome, in stats.
type liveCounts struct {
	Allowed       int64 `json:"allowed"`
	RateLimited   int64 `json:"rate_limited"`
	QuotaExceeded int64 `json:"quota_exceeded"`
	Unavailable   int64 `json:"limiter_unavailable"`
	Unauthorized  int64 `json:"unauthorized"`
	Exempt        int64 `json:"exempt"`
}

func (c *liveCounts) add(o liveCounts) {
	c.Allowed += o.Allowed
	c.RateLimited += o.RateLimited
	c.QuotaExceeded += o.QuotaExceeded
	c.Unavailable += o.Unavailable
	c.Unauthorized += o.Unauthorized
	c.Exempt += o.Exempt
}

func (c *liveCounts) total() int64 {
	return c.Allowed + c.RateLimited + c.QuotaExceeded + c.Unavailable + c.Unauthorized + c.Exempt
}

// liveSnapshot is one replica's stats for one interval, on the Bus.
type liveSnapshot struct {
	Interval float64 `json:"interval_seconds"`
	liveCounts
	Subjects []byte `json:"subjects"` // subjectSketch registers
	Redis    *Check `json:"redis,omitempty"`
	Database *Check `json:"database,omitempty"`
}

// statsData is the data of a stats message. Its counts are this
// replica's for the interval that just ended plus every snapshot another
// replica sent since the previous stats message, each counted in exactly
// one message: summed over a run, they are what the cluster served. Its
// levels (Rate, ActiveSubjects, Replicas, Redis, Database) take each
// other replica's latest snapshot, while it was heard from within the
// last two intervals.
type statsData struct {
	IntervalSeconds float64 `json:"interval_seconds"`
	// Requests counts every decided request. Rate is requests per second,
	// summed over the replicas: each one's over the snapshots it sent
	// since the previous stats message, or, when none came (a late
	// one), over the last it sent.
	Requests int64   `json:"requests"`
	Rate     float64 `json:"rate"`
	liveCounts
	// ActiveSubjects is how many distinct subjects made requests, over
	// the cluster (estimated; exact in practice below a few hundred).
	ActiveSubjects int64 `json:"active_subjects"`
	Replicas       int   `json:"replicas"`
	// Redis and Database are the worst state any replica reports.
	Redis    *Check `json:"redis,omitempty"`
	Database *Check `json:"database,omitempty"`
}

// busEnvelope is a message on the Bus.
type busEnvelope struct {
	Replica    string         `json:"replica"`
	Stats      *liveSnapshot  `json:"stats,omitempty"`
	Violations []busViolation `json:"violations,omitempty"`
	// Dropped counts violations the replica saw and did not send.
	Dropped uint64 `json:"dropped,omitempty"`
	Alert   *Alert `json:"alert,omitempty"`
}

// liveWindow counts the requests of the current stats interval.
type liveWindow struct {
	outcomes [6]atomic.Int64 // by Outcome-1
	subjects subjectSketch
}

func (w *liveWindow) totals() liveCounts {
	n := func(o quota.Outcome) int64 { return w.outcomes[o-1].Load() }
	return liveCounts{Allowed: n(quota.Allowed), RateLimited: n(quota.RateLimited), QuotaExceeded: n(quota.QuotaExceeded),
		Unavailable: n(quota.Unavailable), Unauthorized: n(quota.Unauthorized), Exempt: n(quota.Exempt)}
}

// liveClient is one WebSocket connection.
type liveClient struct {
	send chan []byte
	seen atomic.Int64 // Unix ns of its last message or pong

	// Owned by the fan-out, under hub.mu.
	budget  tokenBucket
	pending uint64 // violations not sent, not yet summarised
}

func (c *liveClient) alive() { c.seen.Store(time.Now().UnixNano()) }

// tokenBucket is a token bucket of rate per second, holding at most rate.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

func (b *tokenBucket) take(now time.Time, rate float64) bool {
	b.tokens = min(rate, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// hub is the live stream. Publish counts into the current window and
// queues violations; one fan-out goroutine (Run) turns them into
// messages, paces them per client and for the Bus, and hands them to
// each client's bounded queue, which the client's own goroutine writes.
// Nothing on the request path waits for a client or the Bus.
type hub struct {
	o     StreamOptions
	redis Checker // nil: not reported
	db    Checker
	logf  func(format string, args ...any)
	now   func() time.Time

	cur       atomic.Pointer[liveWindow]
	events    chan quota.Event // violations for the fan-out
	alerts    chan Alert
	stats     chan *liveSnapshot // this replica's, each interval
	inbox     chan *busEnvelope  // from other replicas
	outbox    chan *busEnvelope  // to the Bus
	lastStats atomic.Pointer[[]byte]
	done      chan struct{}   // closed when Run ends: clients leave
	abort     context.Context // cancelled a second later: writes stop
	abortNow  context.CancelFunc

	mu       sync.Mutex
	clients  map[*liveClient]struct{}
	closed   bool
	conns    sync.WaitGroup
	nclients atomic.Int64

	sent, dropped, violationsDropped atomic.Uint64
	lost, lostRemote, busDropped     atomic.Uint64 // violations dropped before the fan-out

	// busRetry bounds the pause between attempts to subscribe to the Bus.
	busRetry struct{ min, max time.Duration }
}

func newHub(o StreamOptions, checks map[string]Checker, logf func(string, ...any), now func() time.Time) *hub {
	o = o.withDefaults()
	h := &hub{
		o: o, redis: checks["redis"], db: checks["database"], logf: logf, now: now,
		events:  make(chan quota.Event, 1024),
		alerts:  make(chan Alert, 64),
		stats:   make(chan *liveSnapshot),
		inbox:   make(chan *busEnvelope, 256),
		outbox:  make(chan *busEnvelope, 64),
		done:    make(chan struct{}),
		clients: map[*liveClient]struct{}{},
	}
	h.cur.Store(new(liveWindow))
	h.abort, h.abortNow = context.WithCancel(context.Background())
	h.busRetry.min, h.busRetry.max = time.Second, 30*time.Second
	return h
}

// Publish reports a decided request to the live stream: it counts in the
// next stats message and, when it is a violation, reaches every client,
// here and (through the Bus) on every replica. It never blocks and does
// not allocate: call it from proxy.Options.Observe. Violations that find
// the queue full are dropped, counted, and reported to clients in a
// violations_dropped message.
func (s *Server) Publish(e quota.Event) { s.hub.publish(e) }

// PublishAlert sends an alert message to every client of every replica.
// Raise each alert on one replica only: the Bus carries it to the others.
// It never blocks; an alert that finds the queue full is dropped and
// counted.
func (s *Server) PublishAlert(a Alert) {
	select {
	case s.hub.alerts <- a:
	default:
		s.hub.dropped.Add(1)
	}
}

// Run runs the live stream's background work until ctx is done: stats,
// the fan-out of violations and alerts, and the Bus. Without it, clients
// get heartbeats only. When ctx is done it closes every client (going
// away) and returns once they are gone. Call it once.
func (s *Server) Run(ctx context.Context) { s.hub.run(ctx) }

func (h *hub) publish(e quota.Event) {
	w := h.cur.Load()
	if i := int(e.Outcome) - 1; i >= 0 && i < len(w.outcomes) {
		w.outcomes[i].Add(1)
	}
	if e.Subject != "" {
		w.subjects.add(e.Subject)
	}
	if e.Violated == nil {
		return
	}
	select {
	case h.events <- e:
	default:
		h.lost.Add(1)
	}
}

func (h *hub) run(ctx context.Context) {
	var wg sync.WaitGroup
	if h.o.Bus != nil {
		wg.Go(func() { h.subscribe(ctx) })
		wg.Go(func() { h.sendLoop(ctx) })
	}
	wg.Go(func() { h.statsLoop(ctx) })
	h.fanout(ctx)
	wg.Wait()
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	close(h.done)
	stalled := time.AfterFunc(time.Second, h.abortNow) // for writes that hang
	h.conns.Wait()
	stalled.Stop()
}

// fanState is the fan-out goroutine's own state.
type fanState struct {
	peers      map[string]*replicaStats
	batch      []busViolation // for the Bus
	busBudget  tokenBucket
	busPending uint64 // violations not sent on the Bus
}

// replicaStats is what the fan-out holds of another replica's stats.
// Counts are deltas: each snapshot's are added to the next stats message
// once, whenever it arrives (late, or two in one interval). Levels are
// its latest snapshot's, until the next one.
type replicaStats struct {
	// counts sums the snapshots received since the last stats message;
	// interval is the seconds they cover.
	counts   liveCounts
	interval float64
	// latest is its last snapshot: health checks and active subjects.
	latest *liveSnapshot
	// rate is its requests per second over the last snapshots counted.
	rate float64
	seen time.Time
}

// maxBusBatch bounds the violations of one Bus message.
const maxBusBatch = 16

func (h *hub) fanout(ctx context.Context) {
	rate := float64(h.o.ViolationRate)
	f := &fanState{peers: map[string]*replicaStats{}, busBudget: tokenBucket{tokens: rate, last: time.Now()}}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-h.events:
			h.collectLost(f)
			v := violationOf(&e, h.o.Replica)
			h.deliver(&v)
			if h.o.Bus != nil {
				if f.busBudget.take(time.Now(), rate) {
					f.batch = append(f.batch, v)
				} else {
					f.busPending++
				}
				if len(f.batch) >= maxBusBatch || len(f.batch) > 0 && len(h.events) == 0 {
					h.flushBus(f)
				}
			}
		case env := <-h.inbox:
			h.receive(f, env)
		case a := <-h.alerts:
			h.broadcast(encodeMessage("alert", h.now(), a))
			if h.o.Bus != nil {
				h.toBus(&busEnvelope{Replica: h.o.Replica, Alert: &a})
			}
		case snap := <-h.stats:
			h.collectLost(f)
			h.sendStats(f, snap)
		case <-tick.C:
			h.collectLost(f)
			h.summarise()
			if f.busPending > 0 {
				h.flushBus(f)
			}
		}
	}
}

// collectLost counts the violations dropped before the fan-out as not
// sent, to every client and to the Bus.
func (h *hub) collectLost(f *fanState) {
	local, remote := h.lost.Swap(0), h.lostRemote.Swap(0)
	if local+remote > 0 {
		h.mu.Lock()
		for c := range h.clients {
			c.pending += local + remote
			h.violationsDropped.Add(local + remote)
		}
		h.mu.Unlock()
	}
	if h.o.Bus != nil {
		f.busPending += local
	}
}

// deliver offers a violation to every client: as a message while the
// client's budget and queue allow, else as one more to summarise.
func (h *hub) deliver(v *busViolation) {
	now, rate := time.Now(), float64(h.o.ViolationRate)
	var msg []byte
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		if len(c.send) < cap(c.send) && c.budget.take(now, rate) {
			if msg == nil {
				msg = encodeMessage("violation", v.At, v.liveViolation)
			}
			c.send <- msg // only the fan-out sends, and there is room
			continue
		}
		c.pending++
		h.violationsDropped.Add(1)
	}
}

// summarise sends each client that missed violations a
// violations_dropped message, when there is room for it.
func (h *hub) summarise() {
	at := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		if c.pending > 0 && len(c.send) < cap(c.send) {
			c.send <- encodeMessage("violations_dropped", at, map[string]uint64{"count": c.pending})
			c.pending = 0
		}
	}
}

// broadcast offers msg to every client, dropping it for those whose
// queue is full.
func (h *hub) broadcast(msg []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		select {
		case c.send <- msg:
		default:
			h.dropped.Add(1)
		}
	}
}

// receive handles a message of another replica.
func (h *hub) receive(f *fanState, env *busEnvelope) {
	if s := env.Stats; s != nil {
		p := f.peers[env.Replica]
		if p == nil {
			p = new(replicaStats)
			f.peers[env.Replica] = p
		}
		p.counts.add(s.liveCounts)
		p.interval += s.Interval
		p.latest, p.seen = s, h.now()
	}
	for i := range env.Violations {
		h.deliver(&env.Violations[i])
	}
	if env.Dropped > 0 {
		h.lostRemote.Add(env.Dropped)
		h.collectLost(f)
	}
	if env.Alert != nil {
		h.broadcast(encodeMessage("alert", h.now(), env.Alert))
	}
}

// sendStats sums this replica's snapshot with the snapshots every other
// replica sent since the last call, each counted once (see statsData),
// and sends the sum. The levels (rate, active subjects, health checks,
// the replica count) take each other replica's latest snapshot, while
// it was heard from within two intervals; one silent for longer drops
// out of them, and anything it sent before is still counted.
func (h *hub) sendStats(f *fanState, local *liveSnapshot) {
	if h.o.Bus != nil {
		h.toBus(&busEnvelope{Replica: h.o.Replica, Stats: local})
	}
	d := statsData{IntervalSeconds: h.o.StatsInterval.Seconds(), Replicas: 1, Redis: local.Redis, Database: local.Database}
	d.liveCounts = local.liveCounts
	if local.Interval > 0 {
		d.Rate = float64(local.total()) / local.Interval
	}
	subjects := append([]byte(nil), local.Subjects...)
	now := h.now()
	for id, p := range f.peers {
		d.liveCounts.add(p.counts)
		if p.interval > 0 {
			p.rate = float64(p.counts.total()) / p.interval
		}
		p.counts, p.interval = liveCounts{}, 0
		if now.Sub(p.seen) > 2*h.o.StatsInterval {
			delete(f.peers, id)
			continue
		}
		d.Rate += p.rate
		mergeRegisters(subjects, p.latest.Subjects)
		d.Replicas++
		d.Redis, d.Database = worstCheck(d.Redis, p.latest.Redis), worstCheck(d.Database, p.latest.Database)
	}
	d.Requests = d.total()
	d.Rate = float64(int64(d.Rate*100+0.5)) / 100
	d.ActiveSubjects = estimate(subjects)
	msg := encodeMessage("stats", h.now(), d)
	h.lastStats.Store(&msg)
	h.broadcast(msg)
}

// worstCheck returns the worse of two checks, a on a tie.
func worstCheck(a, b *Check) *Check {
	if b == nil || (a != nil && worse(a.Status, b.Status) == a.Status) {
		return a
	}
	return b
}

// statsLoop closes the window every StatsInterval and hands the
// snapshot, with the state of Redis and the database, to the fan-out.
func (h *hub) statsLoop(ctx context.Context) {
	tick := time.NewTicker(h.o.StatsInterval)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			w := h.cur.Swap(new(liveWindow))
			s := &liveSnapshot{Interval: now.Sub(last).Seconds(), liveCounts: w.totals(), Subjects: w.subjects.registers()}
			last = now
			s.Redis, s.Database = h.check(ctx, h.redis), h.check(ctx, h.db)
			select {
			case h.stats <- s:
			case <-ctx.Done():
				return
			}
		}
	}
}

func (h *hub) check(ctx context.Context, c Checker) *Check {
	if c == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, min(2*time.Second, h.o.StatsInterval))
	defer cancel()
	r := c(ctx)
	return &r
}

// flushBus queues the pending violations for the Bus.
func (h *hub) flushBus(f *fanState) {
	if len(f.batch) == 0 && f.busPending == 0 {
		return
	}
	env := &busEnvelope{Replica: h.o.Replica, Violations: f.batch, Dropped: f.busPending}
	f.batch, f.busPending = nil, 0
	if !h.toBus(env) {
		f.busPending += uint64(len(env.Violations)) + env.Dropped
	}
}

// toBus queues env for the Bus; false when the queue is full.
func (h *hub) toBus(env *busEnvelope) bool {
	select {
	case h.outbox <- env:
		return true
	default:
		h.busDropped.Add(1)
		return false
	}
}

// sendLoop publishes the queued envelopes on the Bus, one at a time.
func (h *hub) sendLoop(ctx context.Context) {
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case env := <-h.outbox:
			for _, msg := range splitEnvelope(env) {
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := h.o.Bus.Publish(pctx, msg)
				cancel()
				switch {
				case err != nil && ctx.Err() == nil:
					h.busDropped.Add(1)
					if !failing {
						failing = true
						h.logf("admin: live stream bus: publish: %v (dropping messages until it recovers)", err)
					}
				case err == nil && failing:
					failing = false
					h.logf("admin: live stream bus: publishing again")
				}
			}
		}
	}
}

// splitEnvelope encodes env in messages of at most MaxBusMessage bytes: a batch
// of violations too long for one is halved; a violation too long alone
// is counted as dropped.
func splitEnvelope(env *busEnvelope) [][]byte {
	b, err := json.Marshal(env)
	if err != nil {
		panic("admin: encode bus message: " + err.Error()) // our own types
	}
	if len(b) <= MaxBusMessage {
		return [][]byte{b}
	}
	if n := len(env.Violations); n > 1 {
		a, z := *env, *env
		a.Violations, z.Violations, z.Dropped = env.Violations[:n/2], env.Violations[n/2:], 0
		return append(splitEnvelope(&a), splitEnvelope(&z)...)
	}
	if len(env.Violations) == 1 {
		e := *env
		e.Violations, e.Dropped = nil, env.Dropped+1
		return splitEnvelope(&e)
	}
	return nil // a snapshot or alert never gets this long
}

// subscribe hears the other replicas until ctx is done. A Bus rides out
// outages by itself; when its Subscribe gives up all the same, this
// tries again after a pause that doubles up to busRetry.max, and logs
// an error once, not at every attempt; a subscription that held longer
// than that ends a streak of failures.
func (h *hub) subscribe(ctx context.Context) {
	pause, last := h.busRetry.min, ""
	for {
		began := time.Now()
		err := h.o.Bus.Subscribe(ctx, h.heard)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > h.busRetry.max {
			pause, last = h.busRetry.min, "" // it had been subscribed
		}
		if msg := fmt.Sprint(err); msg != last {
			last = msg
			h.logf("admin: live stream bus: subscribe: %v (trying again, at least every %v)", err, h.busRetry.max)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, h.busRetry.max)
	}
}

// heard takes a Bus message to the fan-out; its own echoes are ignored.
func (h *hub) heard(msg []byte) {
	env := new(busEnvelope)
	if err := json.Unmarshal(msg, env); err != nil || env.Replica == h.o.Replica {
		return
	}
	select {
	case h.inbox <- env:
	default:
		h.lostRemote.Add(uint64(len(env.Violations)) + env.Dropped)
	}
}

// wsHealth is the body of GET /api/ws/health.
type wsHealth struct {
	Clients           int64  `json:"clients"`
	MessagesSent      uint64 `json:"messages_sent"`
	MessagesDropped   uint64 `json:"messages_dropped"`
	ViolationsDropped uint64 `json:"violations_dropped"`
}

func (h *hub) health() wsHealth {
	return wsHealth{Clients: h.nclients.Load(), MessagesSent: h.sent.Load(),
		MessagesDropped: h.dropped.Load(), ViolationsDropped: h.violationsDropped.Load()}
}

func (s *Server) handleWSHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.hub.health())
}

func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) { s.hub.serve(w, r) }

// serve runs one client, authenticated already (requireToken), its
// origin checked by Accept (same host, or OriginPatterns). It gets a
// heartbeat and the latest stats at once, then its queue, and a heartbeat
// and a ping every HeartbeatInterval. It is closed once silent for
// SilenceTimeout, when a write stalls that long, and when Run ends.
func (h *hub) serve(w http.ResponseWriter, r *http.Request) {
	cl := &liveClient{send: make(chan []byte, h.o.SendBuffer), budget: tokenBucket{tokens: float64(h.o.ViolationRate), last: time.Now()}}
	cl.alive()
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		OriginPatterns: h.o.OriginPatterns,
		OnPongReceived: func(context.Context, []byte) { cl.alive() },
	})
	if err != nil {
		return // Accept answered (403 for a foreign origin)
	}
	c.SetReadLimit(4096)
	if !h.add(cl) {
		c.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}
	defer h.remove(cl)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer cancel()
		for {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
			cl.alive()
		}
	}()
	h.write(ctx, c, cl)
	code, reason := h.status(ctx, cl)
	closeConn(c, cancel, code, reason)
	<-read
}

// write sends cl's messages until the client goes, stalls or falls
// silent, or Run ends.
func (h *hub) write(ctx context.Context, c *websocket.Conn, cl *liveClient) {
	send := func(msg []byte) bool {
		wctx, cancel := context.WithTimeout(ctx, h.o.SilenceTimeout)
		defer cancel()
		defer context.AfterFunc(h.abort, cancel)()
		if err := c.Write(wctx, websocket.MessageText, msg); err != nil {
			return false
		}
		h.sent.Add(1)
		return true
	}
	heartbeat := func() bool {
		go func() { // waits for the pong; OnPongReceived counts it
			pctx, cancel := context.WithTimeout(ctx, h.o.HeartbeatInterval)
			defer cancel()
			c.Ping(pctx)
		}()
		return send(encodeMessage("heartbeat", h.now(), map[string]string{"replica": h.o.Replica}))
	}
	if !heartbeat() {
		return
	}
	if s := h.lastStats.Load(); s != nil && !send(*s) {
		return
	}
	beat := time.NewTicker(h.o.HeartbeatInterval)
	defer beat.Stop()
	silence := time.NewTimer(h.o.SilenceTimeout)
	defer silence.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.done:
			return
		case msg := <-cl.send:
			if !send(msg) {
				return
			}
		case <-beat.C:
			if !heartbeat() {
				return
			}
		case <-silence.C:
			idle := time.Since(time.Unix(0, cl.seen.Load()))
			if idle >= h.o.SilenceTimeout {
				return
			}
			silence.Reset(h.o.SilenceTimeout - idle)
		}
	}
}

// status says why write returned: the close code and reason to send.
func (h *hub) status(ctx context.Context, cl *liveClient) (websocket.StatusCode, string) {
	switch {
	case ctx.Err() != nil:
		return websocket.StatusNormalClosure, ""
	case isDone(h.done):
		return websocket.StatusGoingAway, "server shutting down"
	case time.Since(time.Unix(0, cl.seen.Load())) >= h.o.SilenceTimeout:
		return websocket.StatusPolicyViolation, "silent for too long: answer pings"
	}
	return websocket.StatusTryAgainLater, "write stalled"
}

func isDone(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// closeConn closes c with a close handshake, giving a client that does
// not answer one second before the connection is cut (cancelRead makes
// the pending read close it).
func closeConn(c *websocket.Conn, cancelRead context.CancelFunc, code websocket.StatusCode, reason string) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Close(code, reason)
	}()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		cancelRead()
		<-done
	}
}

func (h *hub) add(c *liveClient) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.clients[c] = struct{}{}
	h.nclients.Add(1)
	h.conns.Add(1)
	return true
}

func (h *hub) remove(c *liveClient) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.clients, c)
	h.nclients.Add(-1)
	h.conns.Done()
}
