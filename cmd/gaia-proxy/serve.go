package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/admin/pgbus"
	"github.com/gaia-proxy/gaia-proxy/admin/redisbus"
	"github.com/gaia-proxy/gaia-proxy/config"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/proxy"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// serveFlags are the flags of serve (and demo), copied into config
// overrides only when given, so that flags beat env beats file.
type serveFlags struct {
	fs        *flag.FlagSet
	file      string
	overrides map[string]*string
}

func newServeFlags(name string, stderr io.Writer) *serveFlags {
	f := &serveFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError), overrides: map[string]*string{}}
	f.fs.SetOutput(stderr)
	f.fs.StringVar(&f.file, "config", "", "configuration `file` (YAML)")
	for key, help := range map[string]string{
		"upstream":     "upstream `URL` to forward admitted requests to",
		"listen":       "proxy listen `address`",
		"admin.listen": "admin listen `address`",
		"data_dir":     "`directory` of the embedded store",
	} {
		flagName := map[string]string{"admin.listen": "admin-listen", "data_dir": "data-dir"}[key]
		if flagName == "" {
			flagName = key
		}
		f.overrides[key] = f.fs.String(flagName, "", help)
	}
	return f
}

// loadOptions turns parsed flags into config.LoadOptions.
func (f *serveFlags) loadOptions() config.LoadOptions {
	o := config.LoadOptions{File: f.file, Env: os.Environ(), Overrides: map[string]any{}}
	for key, v := range f.overrides {
		if *v != "" {
			o.Overrides[key] = *v
		}
	}
	return o
}

func serveCmd(ctx context.Context, args []string, stderr io.Writer) error {
	f := newServeFlags("serve", stderr)
	migrate := f.fs.Bool("migrate", false, "apply pending database migrations before serving")
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	if f.fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", f.fs.Arg(0))
	}
	logf := log.New(stderr, "", log.LstdFlags).Printf
	return serve(ctx, serveOptions{LoadOptions: f.loadOptions(), Migrate: *migrate}, logf, nil)
}

// journalFlush is the least interval between journal writes.
const journalFlush = 5 * time.Second

// serveOptions are serve's inputs beyond the configuration.
type serveOptions struct {
	config.LoadOptions
	// Migrate applies pending database migrations at start (--migrate).
	Migrate bool
	// Clock is the process's clock; nil means time.Now. Tests skew it.
	Clock func() time.Time
}

// serve runs the proxy and admin port until ctx is done, then drains and
// flushes. ready, when not nil, is called with the listening addresses.
func serve(ctx context.Context, so serveOptions, logf func(string, ...any), ready func(proxyAddr, adminAddr string)) error {
	// SIGHUP reloads (SPEC §3): caught from the start, since by default it
	// ends the process, and a start can take seconds (a migration's lock,
	// Redis). One that comes before the watch begins reloads once then.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var watcher *config.Watcher
	if so.File != "" {
		// Watch before loading, so that no edit slips in between.
		w, err := config.NewWatcher(so.File)
		if err != nil {
			return err
		}
		defer w.Close()
		watcher = w
	}
	cfg, err := config.Load(so.LoadOptions)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings() {
		logf("config: warning: %s", w)
	}
	if d := drainTime(cfg.ShutdownTimeout); d < cfg.ShutdownTimeout {
		logf("config: warning: shutdown_timeout: %v is cut to %v, so that SIGTERM exits within %v", cfg.ShutdownTimeout, d, shutdownBudget)
	}
	if err := admin.CheckListen(cfg.Admin.Listen, cfg.Admin.Token); err != nil {
		return err
	}
	up, err := url.Parse(cfg.Upstream)
	if err != nil {
		// Validate parsed it already; never show the URL, it may hold a password.
		return errors.New("upstream: not a URL")
	}

	led, err := openLedger(ctx, cfg, so.Migrate, logf)
	if err != nil {
		return err
	}
	ledgerOpen := true // the shutdown closes it within its budget
	defer func() {
		if ledgerOpen {
			led.close()
		}
	}()
	hot, err := openHotPath(ctx, cfg.Redis, logf, so.Clock)
	if err != nil {
		return err
	}
	hotOpen := true // the shutdown closes it within its budget
	defer func() {
		if hotOpen {
			hot.close()
		}
	}()
	// On Redis, the ledger catches up with what Redis holds (a replica
	// killed before its flush): the store lists its counters.
	counters, _ := hot.store.(quota.CounterSource)
	// A counter behind the ledger (Redis back with older data, or
	// started from zero while the ledger could not be read) is raised to
	// it: Redis and the in-process store both can.
	raiser, _ := hot.store.(quota.Raiser)
	recorder := quota.NewRecorder(led.usage, &quota.RecorderOptions{FlushInterval: cfg.Quota.FlushInterval, Logf: logf,
		Source: counters, Raiser: raiser, RaiseTimeout: cfg.Redis.Timeout})
	// Roll-ups are rewritten whole at each flush (absolute counts per
	// subject and minute), so they go less often than quota usage: the
	// live stream shows violations at once, analytics can wait seconds.
	journal := quota.NewJournal(led.journal, &quota.JournalOptions{FlushInterval: max(cfg.Quota.FlushInterval, journalFlush), Logf: logf})
	lopts := hot.options
	lopts.Ledger, lopts.Logf = recorder, logf
	lim := limiter.New(hot.store, &lopts)

	pol := &policyState{lo: so.LoadOptions, cfg: cfg, rules: led.rules, logf: logf, watcher: watcher, rulesChanged: make(chan struct{}, 1), hup: hup}
	settings, err := pol.build(ctx)
	if err != nil {
		return err
	}
	metrics := admin.NewMetrics(&admin.MetricsOptions{
		Limiter: lim.State, RoundTrips: hot.roundTrips, Usage: recorder.Stats, Journal: journal.Stats, Routes: routeNames(cfg),
	})
	pol.metrics = metrics
	var adm *admin.Server // built below: it needs the proxy's policy
	px := proxy.New(up, lim, settings, &proxy.Options{
		Logf:            logf,
		Now:             so.Clock,
		UpstreamTimeout: cfg.UpstreamTimeout,
		Observe: func(e quota.Event) {
			journal.Record(e)
			metrics.Observe(e)
			adm.Publish(e)
		},
		Upstream:     metrics.ObserveUpstream,
		BodyTimedOut: metrics.BodyTimedOut,
	})
	pol.proxy = px

	adm = admin.New(&admin.Options{
		Version:      versionString(),
		Logf:         logf,
		Token:        cfg.Admin.Token,
		Policy:       func() *limiter.Policy { return px.Settings().Policy },
		Limiter:      lim,
		Store:        led.admin,
		Auditor:      journal,
		RulesChanged: signalTo(pol.rulesChanged),
		Metrics:      metrics,
		Stream:       admin.StreamOptions{Bus: liveBus(cfg, hot, led, logf), Replica: journal.Replica()},
		Checks: map[string]admin.Checker{
			"redis":    hotPathCheck(lim, hot.mode),
			"database": ledgerCheck(led, recorder, journal),
			"upstream": upstreamCheck(up),
			"config":   pol.check,
		},
	})

	proxyLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		proxyLn.Close()
		return fmt.Errorf("admin.listen: %w", err)
	}
	errLog := log.New(logWriter(logf), "", 0)
	// The shutdown waits for both servers' handlers before its last
	// flush, and cancels what those it cut still wait on.
	running := newHandlers()
	defer running.cut()
	proxySrv := &http.Server{Handler: running.track(px), BaseContext: running.base, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: errLog}
	adminSrv := &http.Server{Handler: running.track(adm), BaseContext: running.base, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: errLog}

	var wg sync.WaitGroup
	// The ledger writers run until the drain ends, so that what in-flight
	// requests use keeps landing; the live stream and reloads stop as
	// soon as shutdown begins.
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	live, stopLive := context.WithCancel(context.Background())
	defer stopLive()
	wg.Go(func() { recorder.Run(bg) })
	wg.Go(func() { journal.Run(bg) })
	wg.Go(func() { pol.watch(live) })
	wg.Go(func() { adm.Run(live) })
	serveErr := make(chan error, 2)
	for _, s := range []struct {
		srv *http.Server
		ln  net.Listener
	}{{proxySrv, proxyLn}, {adminSrv, adminLn}} {
		wg.Go(func() {
			if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		})
	}
	logf("gaia-proxy %s: proxy on %s -> %s, admin on %s, limiter %s, ledger %s", version, proxyLn.Addr(), up.Redacted(), adminLn.Addr(), hot.mode, led.mode)
	if ready != nil {
		ready(proxyLn.Addr().String(), adminLn.Addr().String())
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-serveErr:
	}
	// SPEC §4: from SIGTERM to exit within shutdownBudget. Each step's
	// deadline is a share of it, counted from now (the signal), so the
	// steps cannot add up past it.
	stopping := time.Now()
	drain := drainTime(cfg.ShutdownTimeout)
	logf("shutting down: draining in-flight requests (up to %v)", drain)
	// The live stream closes its WebSocket clients (going away) while the
	// proxy drains, not after.
	stopLive()
	// Shutdown needs a fresh context: ctx is already cancelled.
	sctx, cancel := context.WithDeadline(context.Background(), stopping.Add(drain))
	defer cancel()
	var drained sync.WaitGroup
	drained.Go(func() {
		if err := proxySrv.Shutdown(sctx); err != nil {
			logf("shutdown: proxy: %v: cutting the requests still in flight", err)
			proxySrv.Close()
		}
	})
	drained.Go(func() {
		if adminSrv.Shutdown(sctx) != nil {
			adminSrv.Close()
		}
	})
	drained.Wait()
	// Close does not wait for the handlers it cut, and a hijacked
	// connection (a proxied WebSocket) outlives even a drain that ended
	// in time: cancel what they wait on, so that they return, and what
	// they record makes the last flush.
	running.cut()
	stopBG()
	// The last flush gets what is left of the budget, and at least
	// minLastFlush; the handlers and the background work (returning,
	// normally within milliseconds) may not eat into that.
	flushBy := stopping.Add(shutdownBudget - exitReserve)
	if least := time.Now().Add(minLastFlush); flushBy.Before(least) {
		flushBy = least
	}
	handlersBy := flushBy.Add(-minLastFlush)
	waitBy := time.Now().Add(time.Second)
	if waitBy.After(handlersBy) {
		waitBy = handlersBy
	}
	if !within(waitBy, wg.Wait) {
		logf("shutdown: background work has not stopped yet; flushing anyway")
	}
	if n := running.wait(handlersBy); n > 0 {
		logf("shutdown: %d requests still running after being cut; flushing anyway: what they record from now on (quota usage, refunds, violations, audit entries) may be lost", n)
	}
	fctx, fcancel := context.WithDeadline(context.Background(), flushBy)
	defer fcancel()
	flushLast(fctx, recorder, journal, counters != nil, logf)
	// Closing a pool whose database hangs waits for each connection a
	// cancelled write left behind (pgx: up to 15 s); nothing is left to
	// write, so the exit does not wait that long.
	// Closing Redis's store waits for its workers and background undos,
	// which a hung Redis holds up to their timeouts: it shares the wait.
	ledgerOpen, hotOpen = false, false
	if !within(flushBy.Add(closeTime), func() {
		var closing sync.WaitGroup
		closing.Go(led.close)
		closing.Go(hot.close)
		closing.Wait()
	}) {
		logf("shutdown: the ledger's or Redis's connections did not close in time; exiting without them")
	}
	return runErr
}

// The shutdown's budget (SPEC §4: SIGTERM to exit within 10 s), and its
// shares.
const (
	shutdownBudget = 10 * time.Second
	// lastFlushReserve is the part of the budget the drain may not take
	// (shutdown_timeout is cut to the rest): for the last flush, closing
	// the stores and exiting.
	lastFlushReserve = 2 * time.Second
	// exitReserve is the part of the budget the last flush may not take:
	// for closing the stores and exiting.
	exitReserve = 750 * time.Millisecond
	// closeTime is the longest wait for the ledger to close after the
	// last flush (the rest of exitReserve is for exiting).
	closeTime = 500 * time.Millisecond
	// minLastFlush is the least time the last flush gets.
	minLastFlush = 500 * time.Millisecond
)

// drainTime is how long in-flight requests may drain: shutdown_timeout,
// but no more than the budget leaves.
func drainTime(shutdownTimeout time.Duration) time.Duration {
	return min(shutdownTimeout, shutdownBudget-lastFlushReserve)
}

// within runs f, waits for it until t, and reports whether it returned.
// One that did not goes on in the background.
func within(t time.Time, f func()) bool {
	done := make(chan struct{})
	go func() { f(); close(done) }()
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C:
		return false
	}
}

// flushLast writes to the ledger what it has not got yet, quota usage and
// the journal side by side, within ctx. A failure is logged, loudly, with
// what was not written and where it still is, and does not fail the
// shutdown: SPEC §4 asks for exit 0 within 10 s, and the process could
// not do better by waiting. shared says the hot path is Redis, which
// still holds every counter: this replica then leaves its heartbeat in
// place (Leave only after a flush that succeeded), so another replica
// resyncs after it, or the next start does.
func flushLast(ctx context.Context, r *quota.Recorder, j *quota.Journal, shared bool, logf func(string, ...any)) {
	var usageErr, journalErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		if usageErr = r.Flush(ctx); usageErr != nil {
			return
		}
		// The usage is written: no other replica need resync after this
		// one. Redis's client may hold on past ctx (its own timeouts).
		var err error
		deadline, _ := ctx.Deadline()
		switch {
		case !within(deadline, func() { err = r.Leave(ctx) }):
			logf("shutdown: Redis did not take this replica's leave in time (another replica will resync after this one, and find nothing new)")
		case err != nil:
			logf("shutdown: %v (another replica will resync after this one, and find nothing new)", err)
		}
	})
	wg.Go(func() { journalErr = j.Flush(ctx) })
	wg.Wait()
	if usageErr != nil {
		n := r.Stats().Pending
		if shared {
			logf("shutdown: QUOTA USAGE NOT WRITTEN to the ledger: %d quota counters (%v). Redis still holds them: "+
				"another replica resyncs them to the ledger within about 40 s once it takes writes, or the next start does", n, usageErr)
		} else {
			logf("shutdown: QUOTA USAGE LOST: %d quota counters not written to the ledger (%v); the in-process hot path ends with this process", n, usageErr)
		}
	}
	if journalErr != nil {
		s := j.Stats()
		logf("shutdown: VIOLATIONS, ROLL-UPS AND AUDIT ENTRIES LOST: %d violations, %d roll-up rows and %d audit entries not written to the ledger (%v)",
			s.PendingViolations, s.PendingRollups, s.PendingAudits, journalErr)
	}
	if usageErr == nil && journalErr == nil {
		logf("shutdown complete: quota usage flushed")
		return
	}
	logf("shutdown complete, with the ledger behind (above)")
}

// policyState builds the proxy's settings from the config file and the
// runtime rules, and rebuilds them when either changes: an edit of the
// file or SIGHUP (SPEC §3) reloads the config, a rules notification
// reloads the rules. A new config is loaded and validated in full before
// it is swapped in; an invalid one is refused and the running one keeps
// serving.
type policyState struct {
	lo      config.LoadOptions
	rules   ruleSource // nil: no runtime rules
	logf    func(string, ...any)
	watcher *config.Watcher // nil without a file
	proxy   *proxy.Proxy
	metrics *admin.Metrics
	// rulesChanged is signalled when the runtime rules change: by the
	// store's watch, or by this replica's admin API.
	rulesChanged chan struct{}
	hup          <-chan os.Signal // SIGHUP

	mu       sync.Mutex
	cfg      *config.Config
	ruleList []limiter.Rule
	lastErr  error // of the last config reload
	rulesErr error // of the last rules load
}

// build loads the runtime rules (if any) and returns the settings of the
// current config with them.
func (ps *policyState) build(ctx context.Context) (*proxy.Settings, error) {
	if ps.rules != nil {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := ps.loadRules(ctx); err != nil {
			ps.logf("rules: cannot load runtime rules at start (%v); serving the config alone until the database answers", err)
		}
	}
	return ps.settings(ps.cfg)
}

// settings is cfg with the runtime rules on top.
func (ps *policyState) settings(cfg *config.Config) (*proxy.Settings, error) {
	s, err := buildSettings(cfg)
	if err != nil {
		return nil, err
	}
	if len(ps.ruleList) > 0 {
		if s.Policy, err = s.Policy.WithRules(ps.ruleList); err != nil {
			return nil, fmt.Errorf("runtime rules: %w", err)
		}
	}
	return s, nil
}

func (ps *policyState) loadRules(ctx context.Context) error {
	loc, err := time.LoadLocation(ps.cfg.Quota.Timezone)
	if err != nil {
		return err
	}
	rules, err := ps.rules.Rules(ctx, loc)
	ps.rulesErr = err
	if err != nil {
		return err
	}
	ps.ruleList = rules
	return nil
}

func (ps *policyState) watch(ctx context.Context) {
	changed := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	if ps.watcher != nil {
		wg.Go(func() { ps.watcher.Run(ctx, signalTo(changed)) })
	}
	if ps.rules != nil {
		wg.Go(func() {
			if err := ps.rules.WatchRules(ctx, signalTo(ps.rulesChanged)); err != nil {
				ps.logf("rules: cannot watch runtime rules: %v", err)
			}
		})
	}
	// A reload of the runtime rules that fails (the database away or
	// slow) is tried again, a second later and then at growing intervals
	// up to rulesRetryMax, until one succeeds: a rule already stored
	// would otherwise wait for the next change to come into force. So
	// is a first load at start that failed.
	var retry <-chan time.Time
	wait := time.Second
	ps.mu.Lock()
	if ps.rules != nil && ps.rulesErr != nil {
		retry = time.After(wait)
	}
	ps.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ps.hup:
			ps.reload("SIGHUP")
			continue
		case <-changed:
			ps.reload("file change")
			continue
		case <-ps.rulesChanged:
		case <-retry:
		}
		if ps.reloadRules(ctx) {
			retry, wait = nil, time.Second
			continue
		}
		retry = time.After(wait)
		wait = min(2*wait, rulesRetryMax)
	}
}

// rulesRetryMax is the longest wait between attempts at a reload of the
// runtime rules that keeps failing.
const rulesRetryMax = 30 * time.Second

// signalTo returns a func that signals ch without blocking.
func signalTo(ch chan struct{}) func() {
	return func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (ps *policyState) reload(why string) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	err := ps.applyConfig()
	ps.lastErr = err
	ps.metrics.ConfigReloaded(err)
	if err != nil {
		ps.logf("config: reload (%s) refused, the running config keeps serving: %v", why, err)
		return
	}
	ps.logf("config: reloaded (%s)", why)
}

func (ps *policyState) applyConfig() error {
	next, err := config.Load(ps.lo)
	if err != nil {
		return err
	}
	if keys := config.RestartRequired(ps.cfg, next); len(keys) > 0 {
		return fmt.Errorf("%v: changes to these keys need a restart", keys)
	}
	s, err := ps.settings(next)
	if err != nil {
		return err
	}
	ps.proxy.SetSettings(s)
	ps.cfg = next
	ps.metrics.SetRoutes(routeNames(next))
	return nil
}

// routeNames lists the config's route names, for metric labels.
func routeNames(cfg *config.Config) []string {
	names := make([]string, len(cfg.Routes))
	for i, r := range cfg.Routes {
		names[i] = r.Name
	}
	return names
}

// liveBus carries the live stream between replicas: Redis pub/sub when
// the replicas share Redis, else PostgreSQL NOTIFY; nil (this replica
// alone) on the embedded default.
func liveBus(cfg *config.Config, hot *hotPath, led *ledger, logf func(string, ...any)) admin.Bus {
	switch {
	case hot.rdb != nil:
		b := redisbus.New(hot.rdb, cfg.Redis.KeyPrefix+"live")
		b.Logf = logf
		return b
	case led.pool != nil:
		b := pgbus.New(led.pool)
		b.Logf = logf
		return b
	}
	return nil
}

// reloadRules loads the runtime rules and puts them in force; it
// reports false when they could not be read, so that the caller tries
// again (rules read but refused wait for the next change).
func (ps *policyState) reloadRules(ctx context.Context) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := ps.loadRules(ctx); err != nil {
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			ps.logf("rules: reload failed, the running rules stay in force; trying again: %v", err)
		}
		return false
	}
	s, err := ps.settings(ps.cfg)
	if err != nil {
		ps.logf("rules: refused: %v", err)
		return true
	}
	ps.proxy.SetSettings(s)
	ps.logf("rules: %d runtime rules in force", len(ps.ruleList))
	return true
}

// check reports a refused reload, or rules that could not be loaded, on
// /health until it is mended.
func (ps *policyState) check(context.Context) admin.Check {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	switch {
	case ps.lastErr != nil:
		return admin.Check{Status: admin.StatusDegraded, Error: "last reload refused: " + ps.lastErr.Error()}
	case ps.rules != nil && ps.rulesErr != nil:
		return admin.Check{Status: admin.StatusDegraded, Error: "runtime rules not loaded: " + ps.rulesErr.Error()}
	}
	return admin.Check{Status: admin.StatusOK}
}

// ledgerCheck reports the durable ledger: reachable, and writing.
func ledgerCheck(led *ledger, r *quota.Recorder, j *quota.Journal) admin.Checker {
	return func(ctx context.Context) admin.Check {
		c := admin.Check{Status: admin.StatusOK, Mode: led.mode}
		rs, js := r.Stats(), j.Stats()
		var problems []string
		if err := led.ping(ctx); err != nil {
			problems = append(problems, "unreachable: "+err.Error())
		}
		if !rs.Healthy || !js.Healthy {
			problems = append(problems, fmt.Sprintf("writes failing: %d quota counters, %d violations and %d audit entries queued", rs.Pending, js.PendingViolations, js.PendingAudits))
		}
		if len(problems) > 0 {
			c.Status, c.Error = admin.StatusDegraded, strings.Join(problems, "; ")
		}
		return c
	}
}

// upstreamCheck dials the upstream. An unreachable upstream degrades the
// proxy (callers get 502) but does not make it down: it still limits.
func upstreamCheck(up *url.URL) admin.Checker {
	port := up.Port()
	if port == "" {
		port = "80"
		if up.Scheme == "https" {
			port = "443"
		}
	}
	addr := net.JoinHostPort(up.Hostname(), port)
	return func(ctx context.Context) admin.Check {
		var d net.Dialer
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return admin.Check{Status: admin.StatusDegraded, Error: err.Error()}
		}
		c.Close()
		return admin.Check{Status: admin.StatusOK}
	}
}

// logWriter adapts a Logf to an *http.Server's ErrorLog.
type logWriter func(string, ...any)

func (f logWriter) Write(b []byte) (int, error) {
	f("%s", b)
	return len(b), nil
}
