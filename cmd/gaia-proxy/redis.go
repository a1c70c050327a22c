package main

import (
	"fmt"
	"time"

	"github.com/gaia-proxy/gaia-proxy/config"
	"github.com/redis/go-redis/v9"
)

// newRedis returns a client for cfg.Redis: a cluster client for
// cluster_addrs, a Sentinel failover client for sentinel, else a plain
// client for url; nil when none is set.
//
// A decision gives up after redis.timeout whatever the connection does
// (the limiter bounds it); the client's own timeouts, ten times that,
// only free connections to a Redis that stopped answering.
func newRedis(cfg config.Redis) (redis.UniversalClient, error) {
	t := min(max(10*cfg.Timeout, 100*time.Millisecond), 3*time.Second)
	switch {
	case len(cfg.ClusterAddrs) > 0:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:       cfg.ClusterAddrs,
			DialTimeout: t, ReadTimeout: t, WriteTimeout: t,
		}), nil
	case cfg.Sentinel.Master != "":
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: cfg.Sentinel.Master, SentinelAddrs: cfg.Sentinel.Addrs,
			DialTimeout: t, ReadTimeout: t, WriteTimeout: t,
		}), nil
	case cfg.URL != "":
		opt, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("redis.url: %w", err)
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = t, t, t
		return redis.NewClient(opt), nil
	}
	return nil, nil
}
