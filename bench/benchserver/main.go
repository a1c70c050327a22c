// Command benchserver is the load test's other half: a minimal upstream,
// and a bare httputil.ReverseProxy to measure gaia-proxy against.
//
//	benchserver upstream -listen 127.0.0.1:9101
//	benchserver bare -listen 127.0.0.1:9102 -upstream http://127.0.0.1:9101
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
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchserver upstream|bare -listen ADDR [-upstream URL]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	upstream := fs.String("upstream", "", "upstream URL (bare)")
	fs.Parse(os.Args[2:])

	var h http.Handler
	switch os.Args[1] {
	case "upstream":
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "ok\n")
		})
	case "bare":
		up, err := url.Parse(*upstream)
		if err != nil || up.Host == "" {
			log.Fatalf("bare: -upstream %q: want http://host:port", *upstream)
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
