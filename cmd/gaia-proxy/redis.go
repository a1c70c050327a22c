package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/config"
	"github.com/gaia-proxy/gaia-proxy/internal/logquiet"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/memstore"
	"github.com/gaia-proxy/gaia-proxy/limiter/redisstore"
	"github.com/redis/go-redis/v9"
)

// hotPath is the limiter's store: Redis, shared by replicas, with the
// in-process store as its fallback; or the in-process store alone.
type hotPath struct {
	mode    string                // "redis", "redis-cluster", "redis-sentinel" or "in-process"
	rdb     redis.UniversalClient // nil in-process
	store   limiter.Store
	options limiter.Options // all but Ledger and Logf
	close   func()
	// roundTrips reads the Redis store's batching counters; nil in-process.
	roundTrips func() admin.RoundTrips
}

// openHotPath opens the store of cfg, and connects to Redis before the
// proxy takes traffic (a Redis away is logged, not fatal: failure_mode
// decides until it answers). clock is this process's clock (nil:
// time.Now); Redis decides by its own.
func openHotPath(ctx context.Context, cfg config.Redis, logf func(string, ...any), clock func() time.Time) (*hotPath, error) {
	rdb, kind, err := newRedis(cfg)
	if err != nil {
		return nil, err
	}
	if rdb == nil {
		// memstore cannot hang: no per-decision timer.
		return &hotPath{mode: "in-process", store: memstore.New(clock), options: limiter.Options{Timeout: -1, Now: clock}, close: func() {}}, nil
	}
	mode, err := limiter.ParseFailureMode(cfg.FailureMode)
	if err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis.failure_mode: %w", err)
	}
	rs := redisstore.New(rdb, &redisstore.Options{Prefix: cfg.KeyPrefix, Logf: logf, Clock: clock})
	wctx, cancel := context.WithTimeout(ctx, warmTimeout)
	defer cancel()
	if err := rs.Warm(wctx); err != nil {
		logf("redis: not reachable at start (%v); failure_mode %s decides until it is", err, cfg.FailureMode)
	} else {
		if err := versionError(wctx, rdb); err != nil {
			logf("redis: error: %v; until it is upgraded every decision fails and failure_mode %s decides", err, cfg.FailureMode)
		}
		if w := evictionWarning(wctx, rdb); w != "" {
			logf("redis: warning: %s", w)
		}
	}
	h := &hotPath{
		mode:  kind,
		rdb:   rdb,
		store: rs,
		options: limiter.Options{
			Name:         "redis",
			FailureMode:  mode,
			Fallback:     func() limiter.Store { return memstore.New(clock) },
			Timeout:      cfg.Timeout,
			HoldRefusals: cfg.HoldRefusals,
			Now:          clock,
		},
		close: func() {
			rs.Close()
			rdb.Close()
		},
		roundTrips: func() admin.RoundTrips {
			st := rs.Stats()
			return admin.RoundTrips{Decisions: st.Decisions, RoundTrips: st.RoundTrips}
		},
	}
	return h, nil
}

// evictionWarning says how Redis may drop the limiter's counters to free
// memory: a memory limit with an eviction policy (every counter has a
// TTL, so volatile-* policies evict them too). A limit then forgets what
// it counted and admits more; quota counters come back from the ledger,
// less at most a flush interval. Empty when no node can evict, or when
// CONFIG is not allowed (managed Redis): nothing to say then.
func evictionWarning(ctx context.Context, rdb redis.UniversalClient) string {
	found := eachMaster(ctx, rdb, func(ctx context.Context, c *redis.Client) (string, bool) {
		m, err := c.ConfigGet(ctx, "maxmemory*").Result()
		if err != nil || m["maxmemory"] == "" || m["maxmemory"] == "0" || m["maxmemory-policy"] == "noeviction" {
			return "", false
		}
		return fmt.Sprintf("%s has maxmemory %s with maxmemory-policy %s", c.Options().Addr, m["maxmemory"], m["maxmemory-policy"]), true
	})
	if len(found) == 0 {
		return ""
	}
	return strings.Join(found, "; ") + ": when memory runs short Redis may evict the limiter's counters, and a limit then forgets what it counted and admits more; maxmemory-policy noeviction keeps them (writes then fail when memory is full, and failure_mode applies)"
}

// eachMaster asks f of every master of a cluster at once (of one Redis,
// of it) and returns what f found, sorted; f says false when it finds
// nothing or cannot tell.
func eachMaster(ctx context.Context, rdb redis.UniversalClient, f func(context.Context, *redis.Client) (string, bool)) []string {
	var (
		mu    sync.Mutex
		found []string
	)
	check := func(ctx context.Context, c *redis.Client) error {
		if s, ok := f(ctx, c); ok {
			mu.Lock()
			found = append(found, s)
			mu.Unlock()
		}
		return nil
	}
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		_ = c.ForEachMaster(ctx, check)
	case *redis.Client:
		_ = check(ctx, c)
	}
	slices.Sort(found)
	return found
}

// minRedis is the oldest Redis the script runs on: it writes with SET
// KEEPTTL (Redis 6.0).
const minRedis = 6

// versionError names the nodes that run a Redis older than minRedis, as
// INFO says; nil when all are recent enough, or when INFO is not allowed
// (the script's first run then tells).
func versionError(ctx context.Context, rdb redis.UniversalClient) error {
	old := eachMaster(ctx, rdb, func(ctx context.Context, c *redis.Client) (string, bool) {
		info, err := c.Info(ctx, "server").Result()
		v, ok := redisVersion(info)
		return c.Options().Addr + " runs Redis " + v, err == nil && ok && !recentRedis(v)
	})
	if len(old) == 0 {
		return nil
	}
	return fmt.Errorf("%s: gaia-proxy needs Redis %d.0 or newer (its script writes with SET KEEPTTL)", strings.Join(old, "; "), minRedis)
}

// redisVersion reads redis_version from INFO server.
func redisVersion(info string) (string, bool) {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v, true
		}
	}
	return "", false
}

// recentRedis reports whether version v is minRedis or newer; a version
// it cannot read counts as recent.
func recentRedis(v string) bool {
	major, _, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(major)
	return err != nil || n >= minRedis
}

// warmTimeout bounds the wait for Redis at start.
const warmTimeout = 2 * time.Second

// hotPathCheck reports the limiter's store on /health: while Redis is
// away the proxy is degraded (failing local or open) or down (closed).
// Each check looks at Redis itself (Limiter.Check, at most once a
// second), so /health follows Redis with no requests going through: it
// finds Redis gone, and brings the proxy back on it, which a readiness
// probe that took the replica out of service depends on.
func hotPathCheck(lim *limiter.Limiter, mode string) admin.Checker {
	return func(ctx context.Context) admin.Check {
		st, err := lim.Check(ctx)
		if st.Healthy && err == nil {
			return admin.Check{Status: admin.StatusOK, Mode: mode}
		}
		c := admin.Check{Status: admin.StatusDegraded, Mode: st.Mode, Error: st.LastError}
		if st.Healthy { // still deciding on Redis, which did not answer the check
			c.Mode, c.Error = mode, err.Error()
		}
		if lim.FailureMode() == limiter.FailureClosed {
			c.Status = admin.StatusDown
		}
		return c
	}
}

// newRedis returns a client for cfg.Redis: a cluster client for
// cluster_addrs, a Sentinel failover client for sentinel, else a plain
// client for url; nil when none is set. kind names it for /health:
// "redis", "redis-cluster" or "redis-sentinel". Credentials and TLS
// settings apply to all three (a URL may carry its own credentials, and
// turns TLS on with rediss://).
//
// A decision gives up after redis.timeout whatever the connection does
// (the limiter bounds it); the client's own timeouts, ten times that,
// only free connections to a Redis that stopped answering.
func newRedis(cfg config.Redis) (rdb redis.UniversalClient, kind string, err error) {
	t := min(max(10*cfg.Timeout, 100*time.Millisecond), 3*time.Second)
	tc, err := redisTLS(cfg.TLS, cfg.TLS.Enabled)
	if err != nil {
		return nil, "", err
	}
	switch {
	case len(cfg.ClusterAddrs) > 0:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:    cfg.ClusterAddrs,
			Username: cfg.Username, Password: cfg.Password, TLSConfig: tc,
			DialTimeout: t, ReadTimeout: t, WriteTimeout: t,
		}), "redis-cluster", nil
	case cfg.Sentinel.Master != "":
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: cfg.Sentinel.Master, SentinelAddrs: cfg.Sentinel.Addrs,
			SentinelPassword: cfg.Sentinel.Password,
			Username:         cfg.Username, Password: cfg.Password, TLSConfig: tc,
			DialTimeout: t, ReadTimeout: t, WriteTimeout: t,
		}), "redis-sentinel", nil
	case cfg.URL != "":
		opt, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return nil, "", fmt.Errorf("redis.url: %w", err)
		}
		if opt.TLSConfig != nil { // rediss://, maybe with ?skip_verify=true
			tc, err := redisTLS(cfg.TLS, true)
			if err != nil {
				return nil, "", err
			}
			tc.InsecureSkipVerify = opt.TLSConfig.InsecureSkipVerify
			opt.TLSConfig = tc
		}
		if cfg.Username != "" {
			opt.Username = cfg.Username
		}
		if cfg.Password != "" {
			opt.Password = cfg.Password
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = t, t, t
		return redis.NewClient(opt), "redis", nil
	}
	return nil, "", nil
}

// redisTLS returns the TLS settings of c, or nil when on is false. Its
// files are read now, so that a bad one stops the start, named.
// Without a server_name, the certificate must name the host each
// connection dials (every node's, in a cluster).
func redisTLS(c config.TLS, on bool) (*tls.Config, error) {
	if !on {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.ca_file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis.tls.ca_file: no PEM certificate in %s", c.CAFile)
		}
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.cert_file and key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// redisLog takes go-redis's own log lines (failed dials, Sentinel
// switching masters) into gaia-proxy's log, as "redis client: ...", at
// most one line per kind (go-redis's format string) every 10 s: while
// Redis is away go-redis logs every failed dial, and the limiter already
// logs each transition.
type redisLog struct{ log *logquiet.Log }

func newRedisLog(logf func(format string, args ...any)) *redisLog {
	return &redisLog{logquiet.New(logf, 10*time.Second, nil)}
}

// Printf implements go-redis's logger.
func (l *redisLog) Printf(_ context.Context, format string, args ...any) {
	l.log.Logf(format, "redis client: "+format, args...)
}
