// Package proxy is gaia-proxy's request path: an http.Handler that
// identifies the caller, asks the limiter, and forwards admitted requests
// to the upstream through one httputil.ReverseProxy.
package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gaia-proxy/gaia-proxy/internal/logquiet"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// Settings is the part of the configuration that a reload may change.
type Settings struct {
	Policy   *limiter.Policy
	Identity Identity
}

// Options configure a Proxy. The zero value is usable.
type Options struct {
	// Logf receives operational logs. Nil means log.Printf.
	Logf func(format string, args ...any)
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// UpstreamTimeout bounds the wait for the upstream's response
	// headers; past it the caller gets 504. Zero means 30s. Bodies may
	// stream for longer. A client sending its request body gets as
	// long as grace for an average of 500 bytes a second, and may pause
	// about as long (an eighth more at most); past that it gets 408.
	UpstreamTimeout time.Duration
	// Transport reaches the upstream. Nil means a transport tuned for one
	// busy upstream. A round trip that fails to connect (dial, or TLS
	// handshake, timeouts included) is 502; a timeout once connected is
	// 504.
	Transport http.RoundTripper
	// Observe learns how every request was decided, as it is. It runs
	// on the request's goroutine, so it must not block. Nil means nobody
	// listens.
	Observe func(quota.Event)
	// Upstream learns how long the upstream took to answer a forwarded
	// request (to its response headers), and with what status: 502 or
	// 504 when it failed. Same rules as Observe.
	Upstream func(route string, status int, took time.Duration)
	// BodyTimedOut learns of each request answered 408 because its body
	// did not arrive in time. Same rules as Observe.
	BodyTimedOut func(route string)
}

// Proxy is the request path. Create it with New.
type Proxy struct {
	settings atomic.Pointer[Settings]
	decider  Decider
	observe  func(quota.Event)
	upstream func(route string, status int, took time.Duration)
	slowBody func(route string)
	logf     func(format string, args ...any)
	quiet    *logquiet.Log // errors that repeat per request
	now      func() time.Time
	timeout  time.Duration // Options.UpstreamTimeout
	handler  http.Handler
}

// errorQuiet is how often one kind of per-request error (a dead upstream,
// a dead limiter) reaches the log.
const errorQuiet = 10 * time.Second

// New returns a Proxy forwarding to up, limiting with d.
func New(up *url.URL, d Decider, s *Settings, o *Options) *Proxy {
	if o == nil {
		o = &Options{}
	}
	p := &Proxy{decider: d, observe: o.Observe, upstream: o.Upstream, slowBody: o.BodyTimedOut, logf: o.Logf, now: o.Now}
	if p.logf == nil {
		p.logf = log.Printf
	}
	if p.now == nil {
		p.now = time.Now
	}
	p.quiet = logquiet.New(p.logf, errorQuiet, p.now)
	p.settings.Store(s)
	p.timeout = o.UpstreamTimeout
	if p.timeout <= 0 {
		p.timeout = 30 * time.Second
	}
	transport := o.Transport
	if transport == nil {
		transport = newTransport(p.timeout)
	}
	rp := &httputil.ReverseProxy{
		Rewrite:        p.rewrite(up),
		Transport:      transport,
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.upstreamError,
		ErrorLog:       log.New(logWriter(p.logf), "", 0),
		BufferPool:     &copyBuffers,
	}
	p.handler = Chain(p.identify, p.decide)(rp)
	return p
}

// copyBuffers lends the reverse proxy the buffers it copies bodies
// through. Without it every request allocates 32 KiB, which was most of
// the proxy's garbage and so most of its collector's work.
var copyBuffers bufferPool

// bufferPool is an httputil.BufferPool on a sync.Pool.
type bufferPool struct{ pool sync.Pool }

func (b *bufferPool) Get() []byte {
	if buf, ok := b.pool.Get().(*[]byte); ok {
		return *buf
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.pool.Put(&buf) }

// notConnected reports that err says the upstream was not reached, in
// time or not: a dial that failed or timed out, or a TLS handshake that
// timed out (http.Transport's own error, of an unexported type: its
// text, unchanged since Go 1.3, is what tells it). Other handshake
// failures are no timeouts, so they are 502 anyway. Looked at only on a
// failure: a per-request httptrace would tell as well, at five
// allocations a request.
func notConnected(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial" || strings.Contains(err.Error(), "net/http: TLS handshake timeout")
}

// newTransport is http.DefaultTransport with room for many idle
// connections to the one upstream, and the upstream timeout: for the
// connection (dial and TLS handshake, past which the caller gets 502:
// notConnected), for each write of the request to
// stall (an upstream that stops reading a body), and for the response
// headers once the request is sent. It leaves Accept-Encoding as the
// client sent it: asking the upstream for gzip the client did not ask
// for would have the proxy decompress the answer, and the client get it
// without its Content-Length, under the gzip representation's ETag.
func newTransport(timeout time.Duration) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 0
	t.MaxIdleConnsPerHost = 1024
	t.ResponseHeaderTimeout = timeout
	t.TLSHandshakeTimeout = timeout
	t.DisableCompression = true
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &writeBounded{Conn: c, timeout: timeout}, nil
	}
	return t
}

// writeBounded gives each Write on a connection to the upstream timeout
// to make progress, so that an upstream that stops reading a request
// body fails the request (504) instead of holding it forever.
type writeBounded struct {
	net.Conn
	timeout time.Duration
}

func (c *writeBounded) Write(b []byte) (int, error) {
	if err := c.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// SetSettings swaps the policy and identity rules; requests already
// identified finish under the old ones.
func (p *Proxy) SetSettings(s *Settings) { p.settings.Store(s) }

// Settings returns the settings in force.
func (p *Proxy) Settings() *Settings { return p.settings.Load() }

// ServeHTTP handles one proxied request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := &exchange{settings: p.settings.Load(), start: p.now()}
	r = withExchange(r, x) // our own copy, whose Body boundBody may replace
	if r.Body != nil && r.Body != http.NoBody {
		if x.body = p.boundBody(w, r); x.body != nil {
			defer x.body.release()
		}
	}
	p.handler.ServeHTTP(w, r)
}

// rewrite builds the upstream request (SPEC §4.4): the headers dropHeader
// names go; then the identity headers are set and X-Forwarded-* added,
// keeping the chain a trusted peer sent.
func (p *Proxy) rewrite(up *url.URL) func(*httputil.ProxyRequest) {
	return func(pr *httputil.ProxyRequest) {
		x := exchangeFrom(pr.In.Context())
		h := pr.Out.Header
		id := &x.settings.Identity
		for name := range h {
			if dropHeader(name, id, x.peer.trusted, x.keyHeader) {
				delete(h, name)
			}
		}
		if x.peer.trusted {
			if prior := pr.In.Header["X-Forwarded-For"]; len(prior) > 0 {
				h["X-Forwarded-For"] = prior
			}
		}
		if t := h.Get("Upgrade"); t != "" && !strings.EqualFold(t, "websocket") {
			// Only WebSocket passes (SPEC §4.4). After a 101 the
			// connection is raw bytes: another protocol (h2c, say) would
			// carry requests that are never identified or limited.
			h.Del("Upgrade")
			h.Del("Connection")
		}
		x.forwarded = time.Now()
		pr.SetURL(up)
		pr.SetXForwarded()
		if x.peer.trusted && pr.In.Header.Get("X-Forwarded-Proto") != "" {
			h.Set("X-Forwarded-Proto", pr.In.Header.Get("X-Forwarded-Proto"))
		}
		vals := [...]string{x.subject.ID, x.subject.User, x.subject.KeyID, x.subject.Plan, x.shadow}
		held := make([]string, 0, len(vals)) // one allocation for all of them
		for i, k := range [...]string{"X-Gaia-Subject", "X-Gaia-User", "X-Gaia-Key-Id", "X-Gaia-Plan", "X-Gaia-Shadow-Limited"} {
			if vals[i] != "" {
				held = append(held, vals[i])
				h[k] = held[len(held)-1 : len(held) : len(held)]
			}
		}
	}
}

// clientAddrHeaders name the caller's address to upstreams that believe
// them (nginx's real_ip, many frameworks). Only a trusted peer may send
// them; the X-Forwarded-* headers and Forwarded are the ReverseProxy's.
var clientAddrHeaders = [...]string{"X-Real-Ip", "Client-Ip", "X-Client-Ip", "True-Client-Ip"}

// forwardedHeaders are set by the ReverseProxy, which drops the client's
// own before rewrite runs; their aliases (sameHeader) are dropHeader's.
var forwardedHeaders = [...]string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// dropHeader reports whether a client-sent header must not reach the
// upstream: any X-Gaia-* header; the user header from an untrusted peer;
// the API key header that carried the key, when keys are stripped; the
// client-address headers from an untrusted peer. Names compare as CGI
// upstreams (WSGI, Rack, PHP, ...) see them, case-insensitively and with
// '_' for '-' (sameHeader): "X_User_ID" would reach them as the
// HTTP_X_USER_ID of "X-User-ID". Such an alias of an identity, API key,
// client-address or forwarding header is dropped from every peer, trusted
// or not: gaia-proxy reads only the real name, so the alias could only
// tell the upstream something we did not check, and a trusted front
// proxy often passes its clients' headers through.
func dropHeader(name string, id *Identity, trusted bool, keyHeader string) bool {
	if len(name) > 7 && sameHeader(name[:7], "X-Gaia-") {
		return true
	}
	alias := strings.IndexByte(name, '_') >= 0
	if id.UserHeader != "" && sameHeader(name, id.UserHeader) {
		return !trusted || !strings.EqualFold(name, id.UserHeader)
	}
	for _, k := range id.APIKeyHeaders {
		if sameHeader(name, k) {
			return !strings.EqualFold(name, k) || id.StripAPIKey && strings.EqualFold(name, keyHeader)
		}
	}
	if !alias && trusted {
		return false
	}
	for _, a := range clientAddrHeaders {
		if sameHeader(name, a) {
			return true
		}
	}
	if alias {
		for _, f := range forwardedHeaders {
			if sameHeader(name, f) {
				return true
			}
		}
	}
	return false
}

// sameHeader reports whether header names a and b are equal to a CGI
// upstream: ASCII case-insensitively, with '_' and '-' alike.
func sameHeader(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if ca == '_' {
			ca = '-'
		}
		if cb == '_' {
			cb = '-'
		}
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// modifyResponse puts our rate-limit headers in place of any the
// upstream sent, and refunds count-success quotas when the upstream did
// not succeed.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	x := exchangeFrom(resp.Request.Context())
	p.answered(x, resp.StatusCode)
	if resp.StatusCode == http.StatusSwitchingProtocols && x.body != nil {
		x.body.release() // the connection becomes a tunnel, with no deadline
	}
	if x.nheaders > 0 {
		for _, name := range rateLimitNames {
			delete(resp.Header, name)
		}
	}
	delete(resp.Header, "X-Gaia-Shadow-Limited")
	if resp.StatusCode >= 400 {
		p.refund(resp.Request.Context(), x)
	}
	setHeaders(resp.Header, x)
	return nil
}

// answered tells Options.Upstream how the upstream answered.
func (p *Proxy) answered(x *exchange, status int) {
	if p.upstream == nil {
		return
	}
	p.upstream(x.routeName(), status, time.Since(x.forwarded))
}

// upstreamError answers 502 or 504 when the upstream cannot be reached
// or is too slow (SPEC §4.7). A round trip that failed because the
// client's body did not arrive in time, or could not be read, is the
// client's failure, not the upstream's: 408 (bodyTimeout) or 400
// (badBody). Only a bounded body (boundBody) tells the latter; an
// unbounded one's read errors are still answered 502.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	x := exchangeFrom(r.Context())
	if x.body != nil {
		if why := x.body.timedOut(); why != nil {
			p.bodyTimeout(w, r, x, why)
			return
		}
	}
	if r.Context().Err() != nil {
		// The caller left; the upstream may well have done the work, so
		// the request stays charged (as nginx counts its 499s). A
		// refund here would let a caller that hangs up just before the
		// answer use a count-success quota without end.
		callerLeft(w)
		return
	}
	if x.body != nil {
		if err := x.body.readFailed(); err != nil {
			p.badBody(w, r, x, err)
			return
		}
	}
	p.refund(context.WithoutCancel(r.Context()), x)
	setHeaders(w.Header(), x)
	var ne net.Error
	if !notConnected(err) && (errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())) {
		p.answered(x, http.StatusGatewayTimeout)
		p.fail(w, r, http.StatusGatewayTimeout, "upstream_timeout", "the upstream did not answer in time", err)
		return
	}
	p.answered(x, http.StatusBadGateway)
	p.fail(w, r, http.StatusBadGateway, "upstream_unavailable", "the upstream is unreachable", err)
}

// bodyTimeout answers a client whose request body did not arrive in time
// (boundBody): 408 request_timeout. It comes before the caller-left case
// in upstreamError because the read that timed out also cancelled the
// request's context. The response has not started (the round trip
// failed); when it has, the upstream's answer was already on its way,
// and the reverse proxy cuts it off instead.
//
// The upstream gave no answer, so count-success quotas are refunded
// (SPEC §3: callers pay only for requests that worked); the rate limits,
// which no refund touches, keep a client that stalls its bodies on
// purpose to its rate. The Upstream hook is not told (the time went
// waiting on the client, not the upstream); BodyTimedOut is. Its rate-limit headers go
// with the 408, as with a 502 or 504.
func (p *Proxy) bodyTimeout(w http.ResponseWriter, r *http.Request, x *exchange, err error) {
	if p.slowBody != nil {
		p.slowBody(x.routeName())
	}
	p.refund(context.WithoutCancel(r.Context()), x)
	setHeaders(w.Header(), x)
	p.fail(w, r, http.StatusRequestTimeout, "request_timeout", "the request body did not arrive in time", err)
}

// badBody answers a client whose request body could not be read (a
// chunked body framed wrong, say): 400 invalid_request, with the reason.
// The transport closed its connection to the upstream mid-request, so
// the upstream got nothing or a request cut short, and gave no answer.
// As in bodyTimeout, count-success quotas are refunded, the rate limits
// stay charged, the Upstream hook is not told, and the rate-limit
// headers go with the 400.
func (p *Proxy) badBody(w http.ResponseWriter, r *http.Request, x *exchange, err error) {
	p.refund(context.WithoutCancel(r.Context()), x)
	setHeaders(w.Header(), x)
	p.fail(w, r, http.StatusBadRequest, "invalid_request", "the request body could not be read: "+bodyReason(err), err)
}

// maxBodyReason bounds the reason bodyReason gives, in bytes.
const maxBodyReason = 100

// bodyReason says briefly why a request body could not be read: the
// server's own words for a framing error ("invalid byte in chunk
// length"), which tell the client nothing it did not send, cut to a
// line of at most maxBodyReason bytes (a malformed trailer's error
// quotes the line); a network error, which would name addresses, only
// by its kind. The whole error goes to the log.
func bodyReason(err error) string {
	var ne net.Error
	if errors.As(err, &ne) {
		return "the connection failed"
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	if len(s) > maxBodyReason {
		s = strings.ToValidUTF8(s[:maxBodyReason], "") + "..."
	}
	return s
}

// callerLeft answers a caller who went away: 499, which nobody reads,
// for the server's own accounting; nothing is logged.
func callerLeft(w http.ResponseWriter) { w.WriteHeader(499) }

func (p *Proxy) refund(ctx context.Context, x *exchange) {
	if !x.decided {
		return
	}
	if err := p.decider.Refund(ctx, &x.decision, x.cost); err != nil {
		p.quiet.Logf("refund", "proxy: refund for %s: %v", x.subject.ID, err)
		return
	}
	// The response's headers say what the quotas hold after the refund.
	if d, ok := x.decision.AfterRefund(x.cost); ok {
		rateLimitHeaders(x, &d, x.start)
	}
}

// errorBody is the JSON of every error the proxy itself answers.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// fail answers an error of the proxy's own. The client sees code and
// message; err, with details, goes to the log only, at most once per
// code every errorQuiet: when the upstream or the limiter is down, every
// request fails alike.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, status int, code, msg string, err error) {
	if err != nil {
		p.quiet.Logf(code, "proxy: %s %s: %s: %v", r.Method, r.URL.Path, code, err)
	}
	writeJSON(w, status, errorBody{Error: code, Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v) // our own types: cannot fail
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// logWriter adapts Logf to the ReverseProxy's *log.Logger.
type logWriter func(format string, args ...any)

func (f logWriter) Write(b []byte) (int, error) {
	f("proxy: %s", strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}
