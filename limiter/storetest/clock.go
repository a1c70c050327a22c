package storetest

import (
	"sync"
	"time"
)

// Start is the instant the clocks of Run start at: a whole second, so
// the buckets of whole-second windows start on it.
var Start = time.Date(2026, time.March, 2, 10, 0, 0, 0, time.UTC)

// Clock is a fake clock for stores under test. It only moves when told
// to. Safe for concurrent use. The zero value reads the zero time.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock reading t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time. Its method value is what a store takes
// as its clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d and returns the new time.
func (c *Clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// Set moves the clock to t, forward or back.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}
