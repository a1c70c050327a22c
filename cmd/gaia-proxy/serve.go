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
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/config"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/memstore"
	"github.com/gaia-proxy/gaia-proxy/proxy"
	"github.com/gaia-proxy/gaia-proxy/quota"
	"github.com/gaia-proxy/gaia-proxy/quota/boltstore"
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
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	if f.fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", f.fs.Arg(0))
	}
	logf := log.New(stderr, "", log.LstdFlags).Printf
	return serve(ctx, f.loadOptions(), logf, nil)
}

// serve runs the proxy and admin port until ctx is done, then drains and
// flushes. ready, when not nil, is called with the listening addresses.
func serve(ctx context.Context, lo config.LoadOptions, logf func(string, ...any), ready func(proxyAddr, adminAddr string)) error {
	var watcher *config.Watcher
	if lo.File != "" {
		// Watch before loading, so that no edit slips in between.
		w, err := config.NewWatcher(lo.File)
		if err != nil {
			return err
		}
		defer w.Close()
		watcher = w
	}
	cfg, err := config.Load(lo)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings() {
		logf("config: warning: %s", w)
	}
	if err := admin.CheckListen(cfg.Admin.Listen, cfg.Admin.Token); err != nil {
		return err
	}
	if cfg.Redis.URL != "" || len(cfg.Redis.ClusterAddrs) > 0 || cfg.Redis.Sentinel.Master != "" {
		return errors.New("redis: the Redis backend is not available yet; leave redis.* empty to use the in-process limiter")
	}
	if cfg.Database.URL != "" {
		return errors.New("database.url: the PostgreSQL ledger is not available yet; leave it empty to use the embedded store")
	}
	settings, err := buildSettings(cfg)
	if err != nil {
		return err
	}
	up, err := url.Parse(cfg.Upstream)
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}

	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	ledger, err := boltstore.Open(filepath.Join(cfg.DataDir, "gaia.db"))
	if err != nil {
		return err
	}
	defer ledger.Close()
	recorder := quota.NewRecorder(ledger, &quota.RecorderOptions{FlushInterval: cfg.Quota.FlushInterval, Logf: logf})
	lim := limiter.New(memstore.New(nil), &limiter.Options{Ledger: recorder, Logf: logf, Timeout: -1})
	px := proxy.New(up, lim, settings, &proxy.Options{Logf: logf, UpstreamTimeout: cfg.UpstreamTimeout})

	rl := &reloader{lo: lo, cfg: cfg, proxy: px, logf: logf, watcher: watcher}
	adm := admin.New(&admin.Options{
		Version: versionString(),
		Logf:    logf,
		Checks: map[string]admin.Checker{
			"redis":    func(context.Context) admin.Check { return admin.Check{Status: admin.StatusOK, Mode: "in-process"} },
			"database": ledgerCheck(recorder),
			"upstream": upstreamCheck(up),
			"config":   rl.check,
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
	proxySrv := &http.Server{Handler: px, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: errLog}
	adminSrv := &http.Server{Handler: adm, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: errLog}

	var wg sync.WaitGroup
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	wg.Go(func() { recorder.Run(bg) })
	wg.Go(func() { rl.watch(bg) })
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
	logf("gaia-proxy %s: proxy on %s -> %s, admin on %s", version, proxyLn.Addr(), up, adminLn.Addr())
	if ready != nil {
		ready(proxyLn.Addr().String(), adminLn.Addr().String())
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-serveErr:
	}
	// Shutdown needs a fresh context: ctx is already cancelled.
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	logf("shutting down: draining in-flight requests")
	if err := proxySrv.Shutdown(sctx); err != nil {
		logf("shutdown: proxy: %v", err)
	}
	adminSrv.Shutdown(sctx)
	stopBG()
	wg.Wait()
	if err := recorder.Flush(sctx); err != nil {
		return errors.Join(runErr, fmt.Errorf("flush quota usage: %w", err))
	}
	logf("shutdown complete: quota usage flushed")
	return runErr
}

// reloader applies edits of the config file and SIGHUP (SPEC §3): a new
// config is loaded and validated in full, then swapped in; an invalid one
// is refused and the running one keeps serving.
type reloader struct {
	lo      config.LoadOptions
	proxy   *proxy.Proxy
	logf    func(string, ...any)
	watcher *config.Watcher // nil without a file

	mu      sync.Mutex
	cfg     *config.Config
	lastErr error
}

func (rl *reloader) watch(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	changed := make(chan struct{}, 1)
	if rl.watcher != nil {
		done := make(chan struct{})
		defer func() { <-done }()
		go func() {
			defer close(done)
			rl.watcher.Run(ctx, func() {
				select {
				case changed <- struct{}{}:
				default:
				}
			})
		}()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			rl.reload("SIGHUP")
		case <-changed:
			rl.reload("file change")
		}
	}
}

func (rl *reloader) reload(why string) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	err := rl.apply()
	rl.lastErr = err
	if err != nil {
		rl.logf("config: reload (%s) refused, the running config keeps serving: %v", why, err)
		return
	}
	rl.logf("config: reloaded (%s)", why)
}

func (rl *reloader) apply() error {
	next, err := config.Load(rl.lo)
	if err != nil {
		return err
	}
	if keys := config.RestartRequired(rl.cfg, next); len(keys) > 0 {
		return fmt.Errorf("%v: changes to these keys need a restart", keys)
	}
	settings, err := buildSettings(next)
	if err != nil {
		return err
	}
	rl.proxy.SetSettings(settings)
	rl.cfg = next
	return nil
}

// check reports a refused reload on /health until a good one lands.
func (rl *reloader) check(context.Context) admin.Check {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if rl.lastErr != nil {
		return admin.Check{Status: admin.StatusDegraded, Error: "last reload refused: " + rl.lastErr.Error()}
	}
	return admin.Check{Status: admin.StatusOK}
}

// ledgerCheck reports the durable quota ledger.
func ledgerCheck(r *quota.Recorder) admin.Checker {
	return func(context.Context) admin.Check {
		st := r.Stats()
		if !st.Healthy {
			return admin.Check{Status: admin.StatusDegraded, Mode: "embedded", Error: fmt.Sprintf("ledger writes failing, %d counters pending", st.Pending)}
		}
		return admin.Check{Status: admin.StatusOK, Mode: "embedded"}
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
