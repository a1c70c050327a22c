// Package quota keeps calendar quotas durable: it cuts time into calendar
// periods (Calendar), and writes the quota usage counted on the hot path
// to a durable ledger (Store) in batches (Recorder). Ledger backends live
// in quota/boltstore (embedded file) and quota/pgstore (PostgreSQL); both
// pass the contract suite in quota/quotatest.
package quota

import (
	"fmt"
	"strconv"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// Unit is the length of a calendar period.
type Unit uint8

const (
	// Hourly periods run from one local hour boundary to the next. On a
	// day the clocks go back, the repeated hour is two periods.
	Hourly Unit = iota + 1
	// Daily periods run from local midnight to the next local midnight:
	// 23 or 25 hours on days the clocks change.
	Daily
	// Weekly periods start on Monday at local midnight.
	Weekly
	// Monthly periods start on the 1st at local midnight.
	Monthly
)

// String returns the configuration word for u: "hourly", "daily",
// "weekly" or "monthly".
func (u Unit) String() string {
	switch u {
	case Hourly:
		return "hourly"
	case Daily:
		return "daily"
	case Weekly:
		return "weekly"
	case Monthly:
		return "monthly"
	}
	return "unit(" + strconv.Itoa(int(u)) + ")"
}

// Calendar is a limiter.Period: periods of one Unit, aligned to the wall
// clock in Loc. Periods tile time: each one ends where the next starts,
// across daylight-saving changes too. A nil Loc means UTC.
type Calendar struct {
	Unit
	Loc *time.Location
}

var _ limiter.Period = Calendar{}

// ParsePeriod returns the Calendar of a configured period name
// ("hourly", "daily", "weekly" or "monthly") in loc; nil loc means UTC.
func ParsePeriod(name string, loc *time.Location) (Calendar, error) {
	for u := Hourly; u <= Monthly; u++ {
		if name == u.String() {
			return Calendar{Unit: u, Loc: loc}, nil
		}
	}
	return Calendar{}, fmt.Errorf("quota: unknown period %q (want hourly, daily, weekly or monthly)", name)
}

// Bounds returns the period [start, end) that holds t, both in c.Loc.
// Days, weeks and months start at local midnight as time.Date computes
// it: where a zone skips midnight, that is an instant near it, and
// periods still tile. Bounds panics if c.Unit is not a valid Unit.
func (c Calendar) Bounds(t time.Time) (start, end time.Time) {
	loc := c.Loc
	if loc == nil {
		loc = time.UTC
	}
	t = t.In(loc)
	if c.Unit == Hourly {
		return hourBounds(t)
	}
	y, m, d := t.Date()
	var dm, dd int // months and days from one period start to the next
	switch c.Unit {
	case Daily:
		dd = 1
	case Weekly:
		d -= (int(t.Weekday()) + 6) % 7 // back to Monday
		dd = 7
	case Monthly:
		d, dm = 1, 1
	default:
		panic("quota: Bounds on a Calendar with invalid " + c.Unit.String())
	}
	at := func(k int) time.Time { return time.Date(y, m+time.Month(k*dm), d+k*dd, 0, 0, 0, 0, loc) }
	// time.Date may place a skipped midnight before t's own date starts,
	// so step to the last k with at(k) <= t. Starts never decrease with
	// k (a skipped day is an empty period), so that k is unique for every
	// instant of the period: periods tile.
	k := 0
	for t.Before(at(k)) {
		k--
	}
	for !t.Before(at(k + 1)) {
		k++
	}
	return at(k), at(k + 1)
}

// hourBounds returns the local hour holding t. Boundaries are the
// instants where the local clock shows a whole hour, plus every change
// of UTC offset, so an hour the clocks repeat is two periods and a
// half-hour shift (Australia/Lord_Howe) gives a half-hour period.
func hourBounds(t time.Time) (start, end time.Time) {
	_, off := t.Zone()
	into := (t.Unix() + int64(off)) % 3600 // seconds past the local hour
	if into < 0 {
		into += 3600
	}
	start = time.Unix(t.Unix()-into, 0).In(t.Location())
	end = start.Add(time.Hour)
	from, to := offsetSpan(t)
	if !from.IsZero() && start.Before(from) {
		start = from
	}
	if !to.IsZero() && end.After(to) {
		end = to
	}
	return start, end
}

// offsetSpan returns the longest interval [from, to) around t in which
// t's zone keeps one UTC offset; a zero bound means unbounded. Zone
// changes that keep the offset (a renamed abbreviation) are crossed.
func offsetSpan(t time.Time) (from, to time.Time) {
	_, off := t.Zone()
	from, to = t.ZoneBounds()
	for i := 0; i < 8 && !from.IsZero(); i++ {
		prev := from.Add(-time.Second)
		if _, o := prev.Zone(); o != off {
			break
		}
		from, _ = prev.ZoneBounds()
	}
	for i := 0; i < 8 && !to.IsZero(); i++ {
		if _, o := to.Zone(); o != off {
			break
		}
		_, to = to.ZoneBounds()
	}
	return from, to
}
