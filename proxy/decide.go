package proxy

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// Decider checks and charges the limits of one request.
// *limiter.Limiter implements it.
type Decider interface {
	// Decide checks every limit and, only if all pass, charges cost.
	Decide(ctx context.Context, limits []limiter.Limit, cost int64) (limiter.Decision, error)
	// Refund gives a failed request's cost back to refundable quotas.
	Refund(ctx context.Context, d *limiter.Decision, cost int64) error
}

// decide applies the limits of the request and answers 429 or 503 when
// it may not pass (SPEC §4.3, §4.5, §4.6).
func (p *Proxy) decide(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x := exchangeFrom(r.Context())
		if x.exempt {
			p.report(r, x, quota.Exempt, 0)
			next.ServeHTTP(w, r)
			return
		}
		limits := x.settings.Policy.For(x.subject, x.route, x.start)
		if len(limits) == 0 {
			p.report(r, x, quota.Allowed, 0)
			next.ServeHTTP(w, r)
			return
		}
		d, err := p.decider.Decide(r.Context(), limits, x.cost)
		took := p.now().Sub(x.start)
		if err != nil && r.Context().Err() != nil {
			callerLeft(w) // while the limiter decided; it did not fail
			return
		}
		if err != nil {
			msg := "rate limiter unavailable"
			if !errors.Is(err, limiter.ErrUnavailable) {
				msg = "rate limiter failed"
			}
			p.report(r, x, quota.Unavailable, took)
			p.fail(w, r, http.StatusServiceUnavailable, "limiter_unavailable", msg, err)
			return
		}
		x.decision, x.decided = d, true
		rateLimitHeaders(x, &d, x.start)
		if names := d.ShadowLimited(); len(names) > 0 {
			x.shadow = strings.Join(names, ", ")
		}
		p.report(r, x, 0, took)
		if !d.Allowed {
			setHeaders(w.Header(), x)
			p.refuse(w, r, x)
			return
		}
		// A forwarded request gets them on the upstream's response
		// (modifyResponse), or on our error (upstreamError): set on w
		// now, an upstream's 1xx (103 Early Hints) would take them away.
		next.ServeHTTP(w, r)
	})
}

// maxEventPath bounds the path an event carries into the violation log.
const maxEventPath = 1024

// report tells Options.Observe how the request was decided; an outcome
// of 0 means "from x's decision".
func (p *Proxy) report(r *http.Request, x *exchange, o quota.Outcome, took time.Duration) {
	if p.observe == nil {
		return
	}
	e := event(r, x)
	e.Latency = took
	if o != 0 {
		e.Outcome, e.Violated = o, nil
	}
	p.observe(e)
}

// event describes a decided request for Options.Observe.
func event(r *http.Request, x *exchange) quota.Event {
	e := quota.Event{
		Time:    x.start,
		Subject: x.subject.ID,
		KeyID:   x.subject.KeyID,
		User:    x.subject.User,
		Plan:    x.subject.Plan,
		Method:  r.Method,
		Path:    r.URL.Path,
		Route:   x.routeName(),
		Outcome: quota.Allowed,
	}
	if len(e.Path) > maxEventPath {
		e.Path = e.Path[:maxEventPath]
	}
	s := x.decision.Refused()
	if s != nil {
		e.Outcome = quota.RateLimited
		if s.Limit.Period != nil {
			e.Outcome = quota.QuotaExceeded
		}
	} else {
		for i := range x.decision.Statuses {
			if st := &x.decision.Statuses[i]; st.Exceeded && st.Limit.Shadow {
				s = st
				break
			}
		}
	}
	if s != nil {
		v := &quota.Violated{Name: s.Limit.Name, Limit: s.Limit.Limit, Window: s.Limit.Window, Shadow: s.Limit.Shadow}
		if s.Limit.Period != nil {
			v.Period = s.Limit.Period.String()
		}
		e.Violated = v
	}
	return e
}

// refusal is the body of a 429 (SPEC §4.5).
type refusal struct {
	Error      string         `json:"error"`
	Message    string         `json:"message"`
	Limit      quota.LimitRef `json:"limit"`
	RetryAfter int64          `json:"retry_after_seconds"`
	Subject    string         `json:"subject"`
}

func (p *Proxy) refuse(w http.ResponseWriter, r *http.Request, x *exchange) {
	s := x.decision.Refused()
	retry := seconds(s.RetryAfter)
	code, what, period := "rate_limited", "rate limit exceeded: ", ""
	if s.Limit.Period != nil {
		code, what, period = "quota_exceeded", "quota exceeded: ", s.Limit.Period.String()
	}
	body := refusal{
		Error:      code,
		Message:    what + s.Limit.String() + " (" + s.Limit.Name + ")",
		Limit:      quota.RefOf(s.Limit.Name, s.Limit.Limit, s.Limit.Window, period),
		RetryAfter: retry,
		Subject:    x.subject.ID,
	}
	if !s.Limit.PerRequest && x.cost > s.Limit.Limit { // a per-request limit charges 1
		body.Message += "; this request costs " + strconv.FormatInt(x.cost, 10) + " and can never fit"
	}
	h := w.Header()
	h.Set("Retry-After", strconv.FormatInt(retry, 10))
	h.Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusTooManyRequests, body)
}

// seconds rounds d up to whole seconds, at least 1 (Retry-After).
func seconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		return 1
	}
	return s
}

// ceilSeconds rounds d up to whole seconds, 0 for d <= 0.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// setHeaders writes the rate-limit and shadow headers of x into h,
// replacing any of the same names.
func setHeaders(h http.Header, x *exchange) {
	vals := make([]string, x.nheaders) // one allocation for all of them
	for i, kv := range x.headers[:x.nheaders] {
		vals[i] = kv.value
		h[kv.name] = vals[i : i+1 : i+1]
	}
	if x.shadow != "" {
		h.Set("X-Gaia-Shadow-Limited", x.shadow)
	}
}

// header is one response header.
type header struct{ name, value string }

// rateLimitNames are the canonical names of the headers
// rateLimitHeaders makes, for deleting an upstream's own.
var rateLimitNames = [...]string{
	"Ratelimit-Policy", "Ratelimit",
	"X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset",
	"X-Quota-Limit", "X-Quota-Remaining", "X-Quota-Reset",
}

// rateLimitHeaders computes the headers of SPEC §4.6 from enforced
// limits into x: RateLimit-Policy lists them all (IETF draft-10 syntax),
// RateLimit names the one closest to exhaustion, X-RateLimit-* the
// closest rate limit and X-Quota-* the closest quota. The values are
// slices of one string: one allocation for them all.
func rateLimitHeaders(x *exchange, d *limiter.Decision, now time.Time) {
	var closest, rate, quota *limiter.Status
	b := make([]byte, 0, 256)
	for i := range d.Statuses {
		s := &d.Statuses[i]
		if s.Limit.Shadow {
			continue
		}
		if len(b) > 0 {
			b = append(b, ", "...)
		}
		b = appendSFString(b, s.Limit.Name)
		b = append(b, ";q="...)
		b = strconv.AppendInt(b, s.Limit.Limit, 10)
		b = append(b, ";w="...)
		b = strconv.AppendInt(b, windowSeconds(s, now), 10)
		closest = closer(closest, s)
		if s.Limit.Period != nil {
			quota = closer(quota, s)
		} else {
			rate = closer(rate, s)
		}
	}
	x.nheaders = 0
	if closest == nil {
		return
	}
	// Record where each value ends, then cut them from one string.
	var ends [len(rateLimitNames)]int
	var names [len(rateLimitNames)]string
	n := 0
	mark := func(name string) {
		names[n], ends[n] = name, len(b)
		n++
	}
	mark(rateLimitNames[0])
	b = appendSFString(b, closest.Limit.Name)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, closest.Remaining, 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, ceilSeconds(closest.Reset), 10)
	mark(rateLimitNames[1])
	for j, s := range []*limiter.Status{rate, quota} {
		if s == nil {
			continue
		}
		b = strconv.AppendInt(b, s.Limit.Limit, 10)
		mark(rateLimitNames[2+3*j])
		b = strconv.AppendInt(b, s.Remaining, 10)
		mark(rateLimitNames[3+3*j])
		b = strconv.AppendInt(b, ceilSeconds(s.Reset), 10)
		mark(rateLimitNames[4+3*j])
	}
	all := string(b)
	start := 0
	for i := range n {
		x.headers[i] = header{names[i], all[start:ends[i]]}
		start = ends[i]
	}
	x.nheaders = n
}

// closer returns whichever status is closer to exhaustion: fewer units
// remaining, then the later reset.
func closer(a, b *limiter.Status) *limiter.Status {
	if a == nil || b.Remaining < a.Remaining || (b.Remaining == a.Remaining && b.Reset > a.Reset) {
		return b
	}
	return a
}

// windowSeconds is a policy's w: the window, or the current period's length.
func windowSeconds(s *limiter.Status, now time.Time) int64 {
	if s.Limit.Period == nil {
		return ceilSeconds(s.Limit.Window)
	}
	start, end := s.Limit.Period.Bounds(now)
	return ceilSeconds(end.Sub(start))
}

// appendSFString appends s as a structured-field string (RFC 8941).
func appendSFString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c >= 0x7f:
			b = append(b, '?')
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
