// Command benchserver is the load test's other half: a minimal upstream,
// a bare httputil.ReverseProxy to measure gaia-proxy against, and the
// same proxy with one github.com/go-redis/redis_rate check per request:
// the hand-rolled Go proxy with a Redis limiter.
//
//	benchserver upstream -listen 127.0.0.1:9101
//	benchserver bare -listen 127.0.0.1:9102 -upstream http://127.0.0.1:9101
//	benchserver redisrate -listen 127.0.0.1:9105 -upstream http://127.0.0.1:9101 -redis redis://127.0.0.1:6379/0
//
// and a constant-rate load generator for latency at a given load:
//
//	benchserver pace -target http://127.0.0.1:9103/bench -rate 7000 -duration 10s
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchserver upstream|bare|redisrate -listen ADDR [-upstream URL] | pace -target URL -rate N")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	upstream := fs.String("upstream", "", "upstream URL (bare, redisrate)")
	redisURL := fs.String("redis", "redis://127.0.0.1:6379/0", "Redis URL (redisrate)")
	target := fs.String("target", "", "URL to load (pace)")
	rate := fs.Int("rate", 1000, "requests per second (pace)")
	duration := fs.Duration("duration", 10*time.Second, "how long to load (pace)")
	conns := fs.Int("conns", 64, "most connections (pace)")
	users := fs.Int("users", 1000, "distinct X-User-ID values (pace)")
	fs.Parse(os.Args[2:])
	if os.Args[1] == "pace" {
		if err := pace(*target, *rate, *duration, *conns, *users); err != nil {
			log.Fatal(err)
		}
		return
	}

	var h http.Handler
	switch os.Args[1] {
	case "upstream":
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "ok\n")
		})
	case "bare", "redisrate":
		up, err := url.Parse(*upstream)
		if err != nil || up.Host == "" {
			log.Fatalf("%s: -upstream %q: want http://host:port", os.Args[1], *upstream)
		}
		// The same transport tuning gaia-proxy uses, so the comparison
		// measures gaia-proxy's own work.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = 0
		t.MaxIdleConnsPerHost = 1024
		t.ResponseHeaderTimeout = 30 * time.Second
		h = &httputil.ReverseProxy{
			Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(up); r.SetXForwarded() },
			Transport: t,
			// wrk cuts connections mid-request when a round ends.
			ErrorLog: log.New(io.Discard, "", 0),
		}
		if os.Args[1] == "redisrate" {
			h = withRedisRate(h, *redisURL)
		}
	default:
		log.Fatalf("unknown mode %q", os.Args[1])
	}
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// withRedisRate checks one redis_rate limit per request, keyed by the
// X-User-ID header, before proxying: one EVALSHA round trip each.
func withRedisRate(next http.Handler, redisURL string) http.Handler {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		log.Fatalf("redisrate: -redis: %v", err)
	}
	lim := redis_rate.NewLimiter(redis.NewClient(opt))
	limit := redis_rate.PerSecond(1_000_000_000)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, err := lim.Allow(r.Context(), "bench:rr:"+r.Header.Get("X-User-ID"), limit)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if res.Allowed == 0 {
			http.Error(w, "rate limited", http.StatusTooManyRequests)
			return
		}
		next.ServeHTTP(w, r)
	})
}
