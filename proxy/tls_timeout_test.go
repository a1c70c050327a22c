package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"
)

// testCert returns a certificate for 127.0.0.1 (httptest's) and a pool
// that trusts it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	s := httptest.NewUnstartedServer(http.NotFoundHandler())
	s.StartTLS()
	defer s.Close()
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	return s.TLS.Certificates[0], pool
}

// silentUpstream listens on loopback and accepts connections, and then
// says nothing: with handshake set, it completes the TLS handshake first
// (offering protos), then reads whatever comes without answering. It
// stops when the test ends.
func silentUpstream(t *testing.T, handshake *tls.Config) *url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				if handshake != nil {
					c = tls.Server(c, handshake)
				}
				io.Copy(io.Discard, c) // handshakes (with TLS), reads, never writes
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return &url.URL{Scheme: "https", Host: ln.Addr().String()}
}

// TestUpstreamTLSHandshakeTimeout: an https upstream that accepts the
// connection and never answers the TLS handshake is unreachable (SPEC
// §4.7): 502 upstream_unavailable once the upstream timeout has passed,
// not 504, with the refund and the Upstream hook of any 502. Once the
// handshake is done, an upstream that does not answer the request is too
// slow: 504 upstream_timeout, over HTTP/1.1 and HTTP/2 alike.
func TestUpstreamTLSHandshakeTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	cert, pool := testCert(t)
	for _, tc := range []struct {
		name      string
		handshake *tls.Config // nil: no TLS from the upstream at all
		status    int
		body      string
	}{
		{"no handshake", nil, http.StatusBadGateway,
			`{"error":"upstream_unavailable","message":"the upstream is unreachable"}` + "\n"},
		{"no answer over HTTP/1.1", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}},
			http.StatusGatewayTimeout, `{"error":"upstream_timeout","message":"the upstream did not answer in time"}` + "\n"},
		{"no answer over HTTP/2", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}},
			http.StatusGatewayTimeout, `{"error":"upstream_timeout","message":"the upstream did not answer in time"}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := silentUpstream(t, tc.handshake)
			tr := newTransport(timeout)
			tr.TLSClientConfig = &tls.Config{RootCAs: pool}
			defer tr.CloseIdleConnections()
			d := &fakeDecider{decide: allowAll}
			var hook statusHook
			p := New(up, d, &Settings{Policy: testPolicy(t), Identity: *testIdentity()},
				&Options{UpstreamTimeout: timeout, Transport: tr, Upstream: hook.record, Logf: t.Logf})
			srv := httptest.NewServer(p)
			defer srv.Close()

			resp, body := get(t, srv.URL+"/x", map[string]string{"X-Api-Key": "secret-1"})
			if resp.StatusCode != tc.status || body != tc.body {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tc.status, tc.body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if resp.Header.Get("Ratelimit-Policy") == "" || resp.Header.Get("X-Quota-Remaining") != "501" {
				t.Errorf("rate-limit headers %v, want them, with the refund in X-Quota-Remaining (501)", resp.Header)
			}
			if got := d.refunds.Load(); got != 1 {
				t.Errorf("refunded %d units, want 1", got)
			}
			if got := hook.seen(); len(got) != 1 || got[0] != tc.status {
				t.Errorf("the Upstream hook saw %v, want [%d]", got, tc.status)
			}
		})
	}
}

// TestUpstreamHTTP2: the transport to an https upstream still speaks
// HTTP/2 when the upstream does.
func TestUpstreamHTTP2(t *testing.T) {
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	up.EnableHTTP2 = true
	up.StartTLS()
	defer up.Close()
	u, _ := url.Parse(up.URL)
	tr := newTransport(time.Minute)
	tr.TLSClientConfig = up.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	defer tr.CloseIdleConnections()
	p := New(u, &fakeDecider{decide: allowAll}, &Settings{Policy: testPolicy(t), Identity: *testIdentity()},
		&Options{Transport: tr, Logf: t.Logf})
	srv := httptest.NewServer(p)
	defer srv.Close()
	if resp, body := get(t, srv.URL+"/x", map[string]string{"X-Api-Key": "secret-1"}); resp.StatusCode != 200 || body != "HTTP/2.0" {
		t.Errorf("got %d %q, want 200 from the upstream over HTTP/2.0", resp.StatusCode, body)
	}
}
