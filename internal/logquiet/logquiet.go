// Package logquiet keeps a log readable while the same thing goes wrong
// over and over: a dead upstream or a dead Redis fails every request, and
// a line for each would bury everything else (and fill disks).
package logquiet

import (
	"fmt"
	"sync"
	"time"
)

// Log passes at most one line of each kind every Quiet period to its
// Logf; the next line of a kind after a quiet period says how many were
// held back since the last one shown. A kind is whatever the caller
// names it: lines of one kind are alike but for their details.
type Log struct {
	logf  func(format string, args ...any)
	quiet time.Duration
	now   func() time.Time

	mu    sync.Mutex
	kinds map[string]*kind
}

type kind struct {
	last time.Time
	held int
}

// MaxKinds bounds the kinds a Log remembers, so that callers whose
// kinds come from outside (another library's format strings) cannot
// grow it without end; past it, it forgets them all and starts over.
const MaxKinds = 64

// New returns a Log writing to logf at most once per kind every quiet;
// now is its clock (nil: time.Now).
func New(logf func(format string, args ...any), quiet time.Duration, now func() time.Time) *Log {
	if now == nil {
		now = time.Now
	}
	return &Log{logf: logf, quiet: quiet, now: now, kinds: map[string]*kind{}}
}

// Logf logs a line of kind k unless one was shown less than the quiet
// period ago.
func (l *Log) Logf(k, format string, args ...any) {
	l.mu.Lock()
	c := l.kinds[k]
	if c == nil {
		if len(l.kinds) >= MaxKinds {
			clear(l.kinds)
		}
		c = &kind{}
		l.kinds[k] = c
	}
	now := l.now()
	if !c.last.IsZero() && now.Sub(c.last) < l.quiet {
		c.held++
		l.mu.Unlock()
		return
	}
	held := c.held
	c.last, c.held = now, 0
	l.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	if held > 0 {
		msg += fmt.Sprintf(" (and %d more like it since the last one shown)", held)
	}
	l.logf("%s", msg)
}
