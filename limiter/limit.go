// Package limiter decides whether a request may pass: it binds configured
// limits to a caller (Policy), and checks and charges every limit of one
// request at once (Store). Backends live in limiter/memstore (in-process)
// and limiter/redisstore (shared by replicas).
package limiter

import (
	"strconv"
	"time"
)

// Kind tells a sliding-window rate limit from a calendar quota.
type Kind uint8

const (
	// Rate is a sliding-window limit: at most Limit units in any interval
	// of length Window.
	Rate Kind = iota + 1
	// Quota is a calendar limit: at most Limit units within one Period.
	Quota
)

// String returns "rate" or "quota".
func (k Kind) String() string {
	switch k {
	case Rate:
		return "rate"
	case Quota:
		return "quota"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Period maps an instant to the calendar period that holds it, for
// example the day in a time zone. quota.Calendar implements it.
// Implementations must be comparable: Limits are compared with ==.
type Period interface {
	// Bounds returns the half-open period [start, end) holding t.
	Bounds(t time.Time) (start, end time.Time)
	// String names the period: "hourly", "daily", "weekly" or "monthly".
	String() string
}

// Buckets is how many buckets a sliding window is cut into. A window is
// checked over its Buckets most recent buckets plus the current one, so
// no interval of length Window ever holds more than Limit, and a caller
// that keeps asking gets at least Buckets/(Buckets+1) (98%) of Limit per
// Window. Every Store implements exactly this algorithm.
const Buckets = 50

// BucketWidth returns the width of one bucket of a window: Window/Buckets
// rounded up to the microsecond, so that Buckets buckets always cover a
// whole window.
func BucketWidth(window time.Duration) time.Duration {
	us := (window.Microseconds() + Buckets - 1) / Buckets
	if us < 1 {
		us = 1
	}
	return time.Duration(us) * time.Microsecond
}

// Limit is one limit bound to one counter.
type Limit struct {
	// Name labels the limit in headers, 429 bodies and logs ("free-1s").
	Name string
	// Key identifies the counter. Limits with equal Keys share usage.
	// It starts with a Redis hash tag ("{user:alice}...") that groups the
	// counters a request usually touches together.
	Key string
	// Limit is the number of units allowed per Window or Period.
	Limit int64
	// Window is the length of a Rate limit's sliding window.
	Window time.Duration
	// Period is the calendar period of a Quota; nil for a Rate limit.
	Period Period
	// Shadow limits never refuse: they report what they would have done.
	Shadow bool
	// Refundable quotas give the cost back when the upstream fails
	// (config "count: success").
	Refundable bool
	// PerRequest limits charge 1 per request whatever the request's cost.
	// Route limits are such: a route's cost is what it charges the
	// caller's own limits, its own limits count its requests.
	PerRequest bool
}

// Kind reports whether l is a Rate limit or a Quota.
func (l Limit) Kind() Kind {
	if l.Period != nil {
		return Quota
	}
	return Rate
}

// String describes the limit: "10 per 1s" or "10000 per daily".
func (l Limit) String() string {
	if l.Period != nil {
		return strconv.FormatInt(l.Limit, 10) + " per " + l.Period.String()
	}
	return strconv.FormatInt(l.Limit, 10) + " per " + FormatWindow(l.Window)
}

// FormatWindow writes a window the way the configuration does: "1s",
// "1m", "1h", "90s", "1h30m".
func FormatWindow(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d >= time.Minute && d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d >= time.Second && d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}
