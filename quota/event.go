package quota

import (
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// Outcome is what gaia-proxy did with a request.
type Outcome uint8

const (
	// Allowed requests were forwarded.
	Allowed Outcome = iota + 1
	// RateLimited requests were refused by a sliding-window limit.
	RateLimited
	// QuotaExceeded requests were refused by a calendar quota.
	QuotaExceeded
	// Unavailable requests were refused because the limiter could not
	// decide (failure mode closed).
	Unavailable
	// Unauthorized requests carried an unknown or malformed key, or no
	// credentials where they are required.
	Unauthorized
	// Exempt requests went to an exempt route, unlimited and uncounted.
	Exempt
)

// String returns "allowed", "rate_limited", "quota_exceeded",
// "limiter_unavailable", "unauthorized" or "exempt".
func (o Outcome) String() string {
	switch o {
	case Allowed:
		return "allowed"
	case RateLimited:
		return "rate_limited"
	case QuotaExceeded:
		return "quota_exceeded"
	case Unavailable:
		return "limiter_unavailable"
	case Unauthorized:
		return "unauthorized"
	case Exempt:
		return "exempt"
	}
	return "unknown"
}

// Event is the outcome of one request, reported by the proxy as it is
// decided, for violations, per-minute roll-ups, metrics and live views.
// The Journal keeps Allowed, RateLimited and QuotaExceeded events.
type Event struct {
	Time time.Time
	// Latency is how long the limiter took to decide (zero when it was
	// not asked).
	Latency time.Duration
	Subject string // "key:acme-prod", "user:alice", "ip:203.0.113.7"
	KeyID   string
	User    string
	Plan    string
	Route   string // "" when no route matched
	Method  string
	Path    string
	Outcome Outcome
	// Violated is the limit that refused the request or, for an allowed
	// request, the shadow limit that would have; nil otherwise.
	Violated *Violated
}

// Violated describes the limit behind a violation.
type Violated struct {
	Name   string
	Limit  int64
	Window time.Duration // rate limits
	Period string        // quotas: "daily", ...
	Shadow bool
}

// LimitRef names a limit as a 429 body does (SPEC §4.5), and as the
// violation history and the live stream show it: {"name","limit",
// "window"} for a rate limit, {"name","limit","period"} for a quota.
type LimitRef struct {
	Name   string `json:"name"`
	Limit  int64  `json:"limit"`
	Window string `json:"window,omitempty"`
	Period string `json:"period,omitempty"`
}

// RefOf returns the LimitRef of a quota of period (its name), or when
// period is "" of a rate limit of window.
func RefOf(name string, limit int64, window time.Duration, period string) LimitRef {
	r := LimitRef{Name: name, Limit: limit, Period: period}
	if period == "" {
		r.Window = limiter.FormatWindow(window)
	}
	return r
}
