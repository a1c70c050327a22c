package quota_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
	_ "time/tzdata" // the same zones on every machine

	"github.com/gaia-proxy/gaia-proxy/quota"
)

var zones = []string{
	"UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata",
	"Asia/Kathmandu", "America/Santiago",
	"America/Havana", // midnight repeats when clocks go back
	"Pacific/Apia",   // skipped 2011-12-30 entirely
}

func load(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestParsePeriod(t *testing.T) {
	for _, u := range []quota.Unit{quota.Hourly, quota.Daily, quota.Weekly, quota.Monthly} {
		c, err := quota.ParsePeriod(u.String(), nil)
		if err != nil || c.Unit != u || c.String() != u.String() {
			t.Errorf("ParsePeriod(%q): got %v, %v, want %v", u.String(), c, err, u)
		}
	}
	for _, name := range []string{"", "Daily", "yearly", "1d"} {
		if _, err := quota.ParsePeriod(name, time.UTC); err == nil {
			t.Errorf("ParsePeriod(%q): got nil error", name)
		}
	}
}

// TestBoundsProperties checks, for random instants from 1990 to 2040
// (half of them near a clock change), that periods hold their instant, are found again from their start,
// tile time, and start where the calendar says.
func TestBoundsProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	lo := time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	hi := time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	for _, zone := range zones {
		loc := load(t, zone)
		for _, u := range []quota.Unit{quota.Hourly, quota.Daily, quota.Weekly, quota.Monthly} {
			c := quota.Calendar{Unit: u, Loc: loc}
			t.Run(zone+"/"+u.String(), func(t *testing.T) {
				for range 3000 {
					at := time.Unix(0, lo+rng.Int64N(hi-lo))
					if _, next := at.In(loc).ZoneBounds(); rng.IntN(2) == 0 && !next.IsZero() {
						// Within two hours of the next clock change.
						at = next.Add(time.Duration(rng.Int64N(int64(4*time.Hour))) - 2*time.Hour)
					}
					if rng.IntN(4) == 0 { // boundaries are whole quarter hours
						at = at.Truncate(15 * time.Minute)
					}
					checkBounds(t, c, at)
				}
			})
		}
	}
}

// checkBounds checks the properties of c.Bounds(at) and the periods
// next to it.
func checkBounds(t *testing.T, c quota.Calendar, at time.Time) {
	t.Helper()
	start, end := c.Bounds(at)
	if at.Before(start) || !at.Before(end) {
		t.Fatalf("%v %v: got [%v, %v), which does not hold it", c, at, start, end)
	}
	if s, e := c.Bounds(start); !s.Equal(start) || !e.Equal(end) {
		t.Fatalf("%v Bounds(start %v): got [%v, %v), want [%v, %v)", c, start, s, e, start, end)
	}
	if s, _ := c.Bounds(end); !s.Equal(end) {
		t.Fatalf("%v Bounds(end %v): starts at %v, want the end", c, end, s)
	}
	if _, e := c.Bounds(start.Add(-time.Nanosecond)); !e.Equal(start) {
		t.Fatalf("%v period before %v: ends at %v, want the start", c, start, e)
	}
	if start.Location() != c.Loc || end.Location() != c.Loc {
		t.Fatalf("%v: got bounds in %v and %v", c, start.Location(), end.Location())
	}
	d := end.Sub(start)
	var minD, maxD time.Duration
	switch c.Unit {
	case quota.Hourly:
		minD, maxD = time.Second, time.Hour
		_, off := start.Zone()
		_, before := start.Add(-time.Second).Zone()
		if m, s := start.Minute(), start.Second(); (m != 0 || s != 0) && off == before {
			t.Fatalf("%v: period starts at %v, neither a whole hour nor an offset change", c, start)
		}
	case quota.Daily:
		minD, maxD = 22*time.Hour, 26*time.Hour
	case quota.Weekly:
		minD, maxD = 7*24*time.Hour-2*time.Hour, 7*24*time.Hour+2*time.Hour
	case quota.Monthly:
		minD, maxD = 28*24*time.Hour-2*time.Hour, 31*24*time.Hour+2*time.Hour
	}
	if c.Unit != quota.Hourly {
		checkMidnight(t, c, start)
	}
	if c.Loc.String() == "Pacific/Apia" && c.Unit > quota.Daily {
		minD -= 24 * time.Hour // the week and month that lost 2011-12-30
	}
	if d < minD || d > maxD {
		t.Fatalf("%v: [%v, %v) lasts %v, want %v to %v", c, start, end, d, minD, maxD)
	}
}

// checkMidnight checks that a daily, weekly or monthly period starts at
// midnight of a Monday (weekly) or a 1st (monthly), where time.Date puts
// that midnight.
func checkMidnight(t *testing.T, c quota.Calendar, start time.Time) {
	t.Helper()
	y, m, d := start.Date()
	for _, day := range []int{d, d + 1, d - 1} { // a skipped midnight may land a day off
		mid := time.Date(y, m, day, 0, 0, 0, 0, c.Loc)
		if !mid.Equal(start) {
			continue
		}
		nominal := time.Date(y, m, day, 12, 0, 0, 0, c.Loc)
		if (c.Unit == quota.Weekly && nominal.Weekday() != time.Monday) || (c.Unit == quota.Monthly && nominal.Day() != 1) {
			t.Fatalf("%v: period starts on %v", c, nominal.Format("Mon 2006-01-02"))
		}
		return
	}
	t.Fatalf("%v: period starts at %v, not at a midnight", c, start)
}

func TestBoundsCases(t *testing.T) {
	ny := load(t, "America/New_York")
	tests := []struct {
		name       string
		zone       string
		unit       quota.Unit
		at         string // RFC 3339
		start, end string // RFC 3339
	}{
		{"utc hour", "UTC", quota.Hourly, "2026-05-01T10:59:59.9Z", "2026-05-01T10:00:00Z", "2026-05-01T11:00:00Z"},
		{"utc day", "UTC", quota.Daily, "2026-05-01T00:00:00Z", "2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z"},
		{"us spring forward day is 23h", "America/New_York", quota.Daily, "2026-03-08T12:00:00-04:00", "2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00"},
		{"us fall back day is 25h", "America/New_York", quota.Daily, "2026-11-01T12:00:00-05:00", "2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00"},
		{"us hour before spring forward", "America/New_York", quota.Hourly, "2026-03-08T01:59:59-05:00", "2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00"},
		{"us first 1am on fall back", "America/New_York", quota.Hourly, "2026-11-01T01:30:00-04:00", "2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00"},
		{"us second 1am on fall back", "America/New_York", quota.Hourly, "2026-11-01T01:30:00-05:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"},
		{"berlin spring forward month", "Europe/Berlin", quota.Monthly, "2026-03-31T23:59:59+02:00", "2026-03-01T00:00:00+01:00", "2026-04-01T00:00:00+02:00"},
		{"berlin fall back day", "Europe/Berlin", quota.Daily, "2026-10-25T02:30:00+01:00", "2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00"},
		{"week starts monday", "UTC", quota.Weekly, "2026-03-15T23:00:00Z", "2026-03-09T00:00:00Z", "2026-03-16T00:00:00Z"},
		{"monday starts a week", "UTC", quota.Weekly, "2026-03-16T00:00:00Z", "2026-03-16T00:00:00Z", "2026-03-23T00:00:00Z"},
		{"week across new year", "America/New_York", quota.Weekly, "2026-01-01T09:00:00-05:00", "2025-12-29T00:00:00-05:00", "2026-01-05T00:00:00-05:00"},
		{"february", "UTC", quota.Monthly, "2028-02-29T12:00:00Z", "2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z"},
		{"december", "Asia/Kolkata", quota.Monthly, "2026-12-31T23:59:59+05:30", "2026-12-01T00:00:00+05:30", "2027-01-01T00:00:00+05:30"},
		{"kolkata half-hour zone", "Asia/Kolkata", quota.Hourly, "2026-05-01T10:45:00+05:30", "2026-05-01T10:00:00+05:30", "2026-05-01T11:00:00+05:30"},
		{"kathmandu quarter-hour zone", "Asia/Kathmandu", quota.Hourly, "2026-05-01T04:59:00Z", "2026-05-01T04:15:00Z", "2026-05-01T05:15:00Z"},
		{"kathmandu day", "Asia/Kathmandu", quota.Daily, "2026-05-01T00:00:00Z", "2026-04-30T18:15:00Z", "2026-05-01T18:15:00Z"},
		{"lord howe half-hour fall back: first 1:30", "Australia/Lord_Howe", quota.Hourly, "2026-04-05T01:45:00+11:00", "2026-04-05T01:00:00+11:00", "2026-04-05T01:30:00+10:30"},
		{"lord howe half-hour fall back: second 1:30", "Australia/Lord_Howe", quota.Hourly, "2026-04-05T01:45:00+10:30", "2026-04-05T01:30:00+10:30", "2026-04-05T02:00:00+10:30"},
		{"lord howe half-hour spring forward", "Australia/Lord_Howe", quota.Hourly, "2026-10-04T02:45:00+11:00", "2026-10-04T02:30:00+11:00", "2026-10-04T03:00:00+11:00"},
		{"lord howe 24.5h day", "Australia/Lord_Howe", quota.Daily, "2026-04-05T12:00:00+10:30", "2026-04-05T00:00:00+11:00", "2026-04-06T00:00:00+10:30"},
		{"lord howe 23.5h day", "Australia/Lord_Howe", quota.Daily, "2026-10-04T12:00:00+11:00", "2026-10-04T00:00:00+10:30", "2026-10-05T00:00:00+11:00"},
		// Santiago skips midnight on 2026-09-06; time.Date puts it at
		// 23:00 -04 the evening before, so that day runs 23 hours.
		{"santiago skipped midnight: day before", "America/Santiago", quota.Daily, "2026-09-05T22:59:59-04:00", "2026-09-05T00:00:00-04:00", "2026-09-05T23:00:00-04:00"},
		{"santiago skipped midnight: the day", "America/Santiago", quota.Daily, "2026-09-05T23:30:00-04:00", "2026-09-05T23:00:00-04:00", "2026-09-07T00:00:00-03:00"},
		{"santiago repeated 23:00", "America/Santiago", quota.Hourly, "2026-04-04T23:30:00-04:00", "2026-04-04T23:00:00-04:00", "2026-04-05T00:00:00-04:00"},
		// Go's zone table ends in 2038; the offset does not change there.
		{"apia end of zone table", "Pacific/Apia", quota.Hourly, "2038-01-19T03:30:00Z", "2038-01-19T03:00:00Z", "2038-01-19T04:00:00Z"},
	}
	parse := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := quota.Calendar{Unit: tc.unit, Loc: load(t, tc.zone)}
			start, end := c.Bounds(parse(tc.at))
			if want := parse(tc.start); !start.Equal(want) {
				t.Errorf("start: got %v, want %v", start, want.In(c.Loc))
			}
			if want := parse(tc.end); !end.Equal(want) {
				t.Errorf("end: got %v, want %v", end, want.In(c.Loc))
			}
			checkBounds(t, c, parse(tc.at))
		})
	}
	// Lengths people check by hand.
	for _, tc := range []struct {
		at   time.Time
		want time.Duration
	}{
		{time.Date(2026, 3, 8, 12, 0, 0, 0, ny), 23 * time.Hour},
		{time.Date(2026, 11, 1, 12, 0, 0, 0, ny), 25 * time.Hour},
		{time.Date(2026, 7, 1, 12, 0, 0, 0, ny), 24 * time.Hour},
	} {
		start, end := quota.Calendar{Unit: quota.Daily, Loc: ny}.Bounds(tc.at)
		if got := end.Sub(start); got != tc.want {
			t.Errorf("New York day of %v: got %v, want %v", tc.at.Format(time.DateOnly), got, tc.want)
		}
	}
}

func TestCalendarNilLoc(t *testing.T) {
	start, end := quota.Calendar{Unit: quota.Daily}.Bounds(time.Date(2026, 5, 1, 10, 0, 0, 0, load(t, "Asia/Tokyo")))
	if want := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC); !start.Equal(want) || !end.Equal(want.AddDate(0, 0, 1)) {
		t.Errorf("nil Loc: got [%v, %v), want the UTC day from %v", start, end, want)
	}
}

func ExampleCalendar_Bounds() {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		panic(err)
	}
	daily := quota.Calendar{Unit: quota.Daily, Loc: ny}
	start, end := daily.Bounds(time.Date(2026, 3, 8, 15, 4, 5, 0, ny)) // clocks spring forward
	fmt.Println(start, "to", end, "is", end.Sub(start))
	start, end = daily.Bounds(time.Date(2026, 11, 1, 15, 4, 5, 0, ny)) // clocks fall back
	fmt.Println(start, "to", end, "is", end.Sub(start))
	// Output:
	// 2026-03-08 00:00:00 -0500 EST to 2026-03-09 00:00:00 -0400 EDT is 23h0m0s
	// 2026-11-01 00:00:00 -0400 EDT to 2026-11-02 00:00:00 -0500 EST is 25h0m0s
}
