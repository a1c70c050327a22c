package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gaia-proxy/gaia-proxy/config"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/redisstore"
	"github.com/gaia-proxy/gaia-proxy/migrations"
)

// configFlags parses the flags of migrate and check: --config only.
func configFlags(name string, args []string, stderr io.Writer) (config.LoadOptions, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "configuration `file` (YAML)")
	if err := fs.Parse(args); err != nil {
		return config.LoadOptions{}, err
	}
	if fs.NArg() > 0 {
		return config.LoadOptions{}, fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))
	}
	return config.LoadOptions{File: *file, Env: os.Environ()}, nil
}

// migrateCmd applies pending migrations (SPEC §2); safe when replicas race.
func migrateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	lo, err := configFlags("migrate", args, stderr)
	if err != nil {
		return err
	}
	cfg, err := config.Load(lo)
	if err != nil {
		return err
	}
	if cfg.Database.URL == "" {
		return fmt.Errorf("migrate: database.url is not set (GAIA_DATABASE_URL or DATABASE_URL): nothing to migrate")
	}
	pool, err := openPool(ctx, cfg.Database.URL)
	if err != nil {
		return err
	}
	defer pool.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	applied, err := migrations.Apply(ctx, pool)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "migrate: the database is up to date")
	}
	for _, name := range applied {
		fmt.Fprintln(stdout, "migrate: applied", name)
	}
	return nil
}

// checkCmd validates a deployment before it goes live (SPEC §2): the
// config, Redis, PostgreSQL and its migrations, the upstream. One line
// per check; it fails when any does.
func checkCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	lo, err := configFlags("check", args, stderr)
	if err != nil {
		return err
	}
	failed := 0
	line := func(name string, err error, detail string) {
		if err != nil {
			failed++
			// One line per check, whatever the error holds (config
			// errors list a problem per line).
			fmt.Fprintf(stdout, "FAIL  %-10s %s\n", name, strings.ReplaceAll(err.Error(), "\n", "; "))
			return
		}
		fmt.Fprintf(stdout, "ok    %-10s %s\n", name, detail)
	}
	cfg, err := config.Load(lo)
	if err != nil {
		line("config", err, "")
		return fmt.Errorf("check: 1 check failed")
	}
	line("config", nil, "valid"+map[bool]string{true: " (" + lo.File + ")"}[lo.File != ""])
	// Each check has 10 s of its own: a slow one leaves the next its time.
	timed := func(check func(ctx context.Context)) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		check(ctx)
	}
	timed(func(ctx context.Context) { checkRedis(ctx, cfg, line) })
	timed(func(ctx context.Context) { checkDatabase(ctx, cfg, line) })
	timed(func(ctx context.Context) {
		up, _ := url.Parse(cfg.Upstream) // Load validated it
		c := upstreamCheck(up)(ctx)
		var upErr error
		if c.Status != "ok" {
			upErr = fmt.Errorf("%s: %s", up.Redacted(), c.Error)
		}
		line("upstream", upErr, up.Redacted()+" accepts connections")
	})
	if failed > 0 {
		return fmt.Errorf("check: %d check(s) failed", failed)
	}
	return nil
}

// checkRedis checks that Redis answers, is recent enough and decides.
func checkRedis(ctx context.Context, cfg *config.Config, line func(name string, err error, detail string)) {
	rdb, _, err := newRedis(cfg.Redis)
	switch {
	case err != nil:
		line("redis", err, "")
	case rdb == nil:
		line("redis", nil, "not configured: in-process limiter")
	default:
		err := rdb.Ping(ctx).Err()
		if err == nil {
			err = versionError(ctx, rdb)
		}
		if err == nil {
			err = decideOnce(ctx, rdb, cfg.Redis.KeyPrefix)
		}
		detail := "reachable, decides"
		if err == nil {
			if w := evictionWarning(ctx, rdb); w != "" {
				detail += "; warning: " + w
			}
		}
		rdb.Close()
		line("redis", err, detail)
	}
}

// checkDatabase checks that PostgreSQL answers and its migrations are
// current.
func checkDatabase(ctx context.Context, cfg *config.Config, line func(name string, err error, detail string)) {
	if cfg.Database.URL == "" {
		line("database", nil, "not configured: embedded store in "+cfg.DataDir)
	} else if pool, err := openPool(ctx, cfg.Database.URL); err != nil {
		line("database", err, "")
	} else {
		err := pool.Ping(ctx)
		line("database", err, "reachable")
		if err == nil {
			pending, err := migrations.Pending(ctx, pool)
			if err == nil && len(pending) > 0 {
				err = fmt.Errorf("not applied: %s (run gaia-proxy migrate)", strings.Join(pending, ", "))
			}
			line("migrations", err, "current")
		}
		pool.Close()
	}
}

// decideOnce makes one real decision on Redis, as the proxy will: it
// runs the limiter's script (sent in full if Redis lacks it), which
// reads and writes a counter under prefix, so that a Redis user without
// the rights to do so (ACL: EVALSHA, EVAL, TIME, MGET, SET, keys under
// the prefix) fails here rather than on the first request. The counter,
// "{gaia-check}check", expires within seconds.
func decideOnce(ctx context.Context, rdb redis.UniversalClient, prefix string) error {
	rs := redisstore.New(rdb, &redisstore.Options{Prefix: prefix, Logf: func(string, ...any) {}})
	defer rs.Close()
	l := limiter.Limit{Name: "check", Key: "{gaia-check}check", Limit: 1 << 40, Window: time.Second}
	if _, err := rs.Decide(ctx, []limiter.Limit{l}, 1); err != nil {
		return fmt.Errorf("reachable, but a decision failed: %w", err)
	}
	return nil
}
