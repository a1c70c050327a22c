package proxy

import (
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/memstore"
)

// cannedTransport answers every request at once, so the benchmarks
// measure the proxies, not a network.
type cannedTransport struct{}

func (cannedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{
		StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"text/plain"}},
		Body:          io.NopCloser(strings.NewReader("ok\n")),
		ContentLength: 3, Request: r,
	}, nil
}

// BenchmarkServeHTTP compares gaia-proxy's handler (3 windows and a daily
// quota per request, 10,000 users, in-process limiter) with a bare
// httputil.ReverseProxy, both on a canned upstream: the difference is
// gaia-proxy's own cost per request.
func BenchmarkServeHTTP(b *testing.B) {
	up, _ := url.Parse("http://upstream.invalid")
	pol, err := limiter.NewPolicy(limiter.PolicyConfig{
		DefaultPlan: "bench",
		Plans: []limiter.Plan{{Name: "bench", Limits: limiter.Limits{
			Rate: []limiter.Spec{
				{Limit: 1e9, Window: time.Second}, {Limit: 1e9, Window: time.Minute}, {Limit: 1e9, Window: time.Hour},
			},
			Quota: []limiter.Spec{{Limit: 1e9, Period: daily{}}},
		}}},
		Keys: []limiter.Key{{ID: "k", Hash: sha256.Sum256([]byte("k"))}},
	})
	if err != nil {
		b.Fatal(err)
	}
	id := *testIdentity()
	gaia := New(up, limiter.New(memstore.New(nil), &limiter.Options{Timeout: -1}), &Settings{Policy: pol, Identity: id},
		&Options{Transport: cannedTransport{}})
	bare := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(up); r.SetXForwarded() },
		Transport: cannedTransport{},
	}
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{{"bare", bare}, {"gaia", gaia}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i++
					r := httptest.NewRequest("GET", "/bench", nil)
					r.RemoteAddr = "127.0.0.1:5000"
					r.Header.Set("X-User-Id", "u"+strconv.Itoa(i%10000))
					w := httptest.NewRecorder()
					bc.h.ServeHTTP(w, r)
					if w.Code != 200 {
						b.Fatalf("status %d", w.Code)
					}
				}
			})
		})
	}
}
