package main

import (
	"context"
	"fmt"
	"time"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/config"
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

// openHotPath opens the store of cfg. clock is this process's clock (nil:
// time.Now); Redis decides by its own.
func openHotPath(cfg config.Redis, logf func(string, ...any), clock func() time.Time) (*hotPath, error) {
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

// hotPathCheck reports the limiter's store on /health: while Redis is
// away the proxy is degraded (failing local or open) or down (closed).
func hotPathCheck(lim *limiter.Limiter, mode string) admin.Checker {
	return func(context.Context) admin.Check {
		st := lim.State()
		if st.Healthy {
			return admin.Check{Status: admin.StatusOK, Mode: mode}
		}
		c := admin.Check{Status: admin.StatusDegraded, Mode: st.Mode, Error: st.LastError}
		if st.Mode == "closed" {
			c.Status = admin.StatusDown
		}
		return c
	}
}

// newRedis returns a client for cfg.Redis: a cluster client for
// cluster_addrs, a Sentinel failover client for sentinel, else a plain
// client for url; nil when none is set. kind names it for /health:
// "redis", "redis-cluster" or "redis-sentinel".
//
// A decision gives up after redis.timeout whatever the connection does
// (the limiter bounds it); the client's own timeouts, ten times that,
// only free connections to a Redis that stopped answering.
func newRedis(cfg config.Redis) (rdb redis.UniversalClient, kind string, err error) {
	t := min(max(10*cfg.Timeout, 100*time.Millisecond), 3*time.Second)
	switch {
	case len(cfg.ClusterAddrs) > 0:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:       cfg.ClusterAddrs,
			DialTimeout: t, ReadTimeout: t, WriteTimeout: t,
		}), "redis-cluster", nil
	case cfg.Sentinel.Master != "":
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: cfg.Sentinel.Master, SentinelAddrs: cfg.Sentinel.Addrs,
			DialTimeout: t, ReadTimeout: t, WriteTimeout: t,
		}), "redis-sentinel", nil
	case cfg.URL != "":
		opt, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return nil, "", fmt.Errorf("redis.url: %w", err)
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = t, t, t
		return redis.NewClient(opt), "redis", nil
	}
	return nil, "", nil
}
