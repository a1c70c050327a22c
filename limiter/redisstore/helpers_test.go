package redisstore_test

import "time"

// utcDay cuts time into UTC days.
type utcDay struct{}

func (utcDay) Bounds(t time.Time) (start, end time.Time) {
	y, m, d := t.UTC().Date()
	start = time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	return start, start.AddDate(0, 0, 1)
}

func (utcDay) String() string { return "daily" }
