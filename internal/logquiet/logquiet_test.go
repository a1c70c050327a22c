package logquiet

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestLog: a kind's lines reach the log at most once per quiet period,
// the next one after it saying how many were held back; kinds are apart,
// and their number stays bounded.
func TestLog(t *testing.T) {
	var lines []string
	now := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	l := New(func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) },
		10*time.Second, func() time.Time { return now })
	for i := range 5 {
		l.Logf("dial", "dial %d: %s", i, "connection refused")
		now = now.Add(time.Second)
	}
	l.Logf("other", "other %q", "100%") // the message is not a format
	now = now.Add(5 * time.Second)      // 10 s after the first
	l.Logf("dial", "dial %d: %s", 9, "connection refused")
	l.Logf("dial", "dial %d: %s", 10, "connection refused")
	want := []string{
		"dial 0: connection refused",
		`other "100%"`,
		"dial 9: connection refused (and 4 more like it since the last one shown)",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("got lines\n%q\nwant\n%q", lines, want)
	}
	for i := range MaxKinds + 10 {
		l.Logf("kind "+strconv.Itoa(i), "kind %d", i)
	}
	if n := l.size(); n > MaxKinds {
		t.Errorf("%d kinds remembered, want at most %d", n, MaxKinds)
	}
}

// size reports how many kinds l remembers.
func (l *Log) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.kinds)
}
