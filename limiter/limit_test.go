package limiter_test

import (
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

func TestLimitString(t *testing.T) {
	tests := []struct {
		l    limiter.Limit
		want string
	}{
		{limiter.Limit{Limit: 10, Window: time.Second}, "10 per 1s"},
		{limiter.Limit{Limit: 300, Window: time.Minute}, "300 per 1m"},
		{limiter.Limit{Limit: 5, Window: 90 * time.Minute}, "5 per 90m"},
		{limiter.Limit{Limit: 5, Window: 1500 * time.Millisecond}, "5 per 1.5s"},
		{limiter.Limit{Limit: 10000, Period: daily}, "10000 per daily"},
	}
	for _, tc := range tests {
		if got := tc.l.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
	if k := (limiter.Limit{Period: daily}).Kind(); k != limiter.Quota || k.String() != "quota" {
		t.Errorf("Kind = %v, want quota", k)
	}
}

func TestBucketWidth(t *testing.T) {
	tests := []struct {
		window, want time.Duration
	}{
		{time.Second, 20 * time.Millisecond},
		{1300 * time.Millisecond, 26 * time.Millisecond},
		{1000001 * time.Microsecond, 20001 * time.Microsecond}, // rounded up: 50 buckets cover the window
		{time.Microsecond, time.Microsecond},
		{0, time.Microsecond},
	}
	for _, tc := range tests {
		got := limiter.BucketWidth(tc.window)
		if got != tc.want {
			t.Errorf("BucketWidth(%v) = %v, want %v", tc.window, got, tc.want)
		}
		if tc.window > 0 && limiter.Buckets*got < tc.window {
			t.Errorf("BucketWidth(%v): %d buckets of %v do not cover the window", tc.window, limiter.Buckets, got)
		}
	}
}
