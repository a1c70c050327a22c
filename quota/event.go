package quota

import "time"

// Outcome is what gaia-proxy did with a request.
type Outcome uint8

const (
	// Allowed requests were forwarded.
	Allowed Outcome = iota + 1
	// RateLimited requests were refused by a sliding-window limit.
	RateLimited
	// QuotaExceeded requests were refused by a calendar quota.
	QuotaExceeded
)

// String returns "allowed", "rate_limited" or "quota_exceeded".
func (o Outcome) String() string {
	switch o {
	case Allowed:
		return "allowed"
	case RateLimited:
		return "rate_limited"
	case QuotaExceeded:
		return "quota_exceeded"
	}
	return "unknown"
}

// Event is the outcome of one limited request, reported by the proxy off
// its response path for violations, per-minute roll-ups and live views.
type Event struct {
	Time    time.Time
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
