package proxy

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
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
	gaia, bare := benchHandlers(b)
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
					benchRequest(b, bc.h, i)
				}
			})
		})
	}
}

// BenchmarkUpload sends 4 MiB bodies through gaia-proxy's handler and
// a bare httputil.ReverseProxy, each behind a real server on loopback
// (the body's bound works on the connection) and before a canned
// upstream that reads the body: the difference is what gaia-proxy costs
// an upload, its body's bound included.
//
//	go test ./proxy -run '^$' -bench Upload -count 5
func BenchmarkUpload(b *testing.B) {
	gaia, bare := benchHandlers(b)
	body := make([]byte, 4<<20)
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{{"bare", bare}, {"gaia", gaia}} {
		b.Run(bc.name, func(b *testing.B) {
			srv := httptest.NewServer(bc.h)
			defer srv.Close()
			client := srv.Client()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				req, _ := http.NewRequest("POST", srv.URL+"/upload", bytes.NewReader(body))
				req.Header.Set("X-User-Id", "u1")
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}

// benchRequest sends request i of the benchmark through h.
func benchRequest(tb testing.TB, h http.Handler, i int) {
	r := httptest.NewRequest("GET", "/bench", nil)
	r.RemoteAddr = "127.0.0.1:5000"
	r.Header.Set("X-User-Id", "u"+strconv.Itoa(i%10000))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 {
		tb.Fatalf("status %d", w.Code)
	}
}

// TestCopyBuffersReused shows that forwarding does not allocate a body
// copy buffer per request (32 KiB), as a bare httputil.ReverseProxy does.
func TestCopyBuffersReused(t *testing.T) {
	gaia, bare := benchHandlers(t)
	perRequest := func(h http.Handler) uint64 {
		const n = 500
		for i := range n { // warm the pool and the limiter's subjects
			benchRequest(t, h, i)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i := range n {
			benchRequest(t, h, i)
		}
		runtime.ReadMemStats(&after)
		return (after.TotalAlloc - before.TotalAlloc) / n
	}
	// The pool loses a buffer now and then (to a collection, or on
	// purpose under the race detector); on average gaia-proxy still
	// allocates far less than the bare proxy's buffer per request.
	g, b := perRequest(gaia), perRequest(bare)
	if g+16<<10 > b {
		t.Errorf("gaia-proxy allocates %d bytes per forwarded request, the bare proxy %d; want at least 16 KiB less (is the buffer pool in use?)", g, b)
	}
}

// benchHandlers returns gaia-proxy's handler (3 windows and a daily quota
// per request, in-process limiter) and a bare reverse proxy, both on a
// canned upstream.
func benchHandlers(tb testing.TB) (gaia, bare http.Handler) {
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
		tb.Fatal(err)
	}
	id := *testIdentity()
	gaia = New(up, limiter.New(memstore.New(nil), &limiter.Options{Timeout: -1}), &Settings{Policy: pol, Identity: id},
		&Options{Transport: cannedTransport{}})
	bare = &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(up); r.SetXForwarded() },
		Transport: cannedTransport{},
	}
	return gaia, bare
}
