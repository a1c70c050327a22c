package main

import (
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tzConfig is a daily quota of 2 in zone {{ZONE}}, on the in-process
// store, so that the serve clock is the only clock.
const tzConfig = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
admin: {listen: 127.0.0.1:0}
data_dir: {{DATA}}
quota: {timezone: ZONE, flush_interval: 100ms}
defaults: {plan: metered}
plans:
  anonymous: {rate: [{limit: 1000, window: 1h}]}
  metered: {quota: [{limit: 2, period: daily}]}
keys:
  - {id: k-tz, key: key-tz, plan: metered}
`

// TestQuotaDayIsLocal runs the server on a fake clock in zones far from
// UTC, ten minutes before local midnight and ten minutes after it: two
// moments on one UTC day, hours from UTC midnight. A daily quota must
// end, and X-Quota-Reset count down to, local midnight (quota.timezone),
// not UTC midnight: after local midnight the caller has a fresh day,
// although the UTC day is the same.
func TestQuotaDayIsLocal(t *testing.T) {
	for _, tc := range []struct {
		zone string
		// before is ten minutes before local midnight.
		before [3]int // year, month, day (local)
	}{
		// 23:50 EST on 15 Jan is 04:50 UTC on 16 Jan (the local day and
		// the UTC day differ); local midnight is 05:00 UTC.
		{"America/New_York", [3]int{2025, 1, 15}},
		// 23:50 JST on 15 Jan is 14:50 UTC on 15 Jan; local midnight is
		// 15:00 UTC, after which the local day (16 Jan) and the UTC day
		// differ.
		{"Asia/Tokyo", [3]int{2025, 1, 15}},
	} {
		t.Run(tc.zone, func(t *testing.T) {
			loc, err := time.LoadLocation(tc.zone)
			if err != nil {
				t.Fatal(err)
			}
			before := time.Date(tc.before[0], time.Month(tc.before[1]), tc.before[2], 23, 50, 0, 0, loc)
			midnight := time.Date(tc.before[0], time.Month(tc.before[1]), tc.before[2]+1, 0, 0, 0, 0, loc)
			after := midnight.Add(10 * time.Minute)
			if before.UTC().Day() != after.UTC().Day() {
				t.Fatalf("bad fixture: %v and %v are on different UTC days", before.UTC(), after.UTC())
			}

			var clock atomic.Int64
			clock.Store(before.UnixNano())
			now := func() time.Time { return time.Unix(0, clock.Load()) }

			up := newUpstream(t)
			dir := t.TempDir()
			text := strings.Replace(tzConfig, "ZONE", tc.zone, 1)
			file := writeConfig(t, filepath.Join(dir, "gaia.yaml"), text, up.URL, dir)
			in := startWith(t, serveOptions{LoadOptions: loadFile(file), Clock: now})

			key := "X-API-Key: key-tz"
			toMidnight := strconv.Itoa(int(midnight.Sub(before) / time.Second)) // "600"
			for i, want := range []struct {
				status           int
				remaining, reset string
			}{
				{http.StatusOK, "1", toMidnight},
				{http.StatusOK, "0", toMidnight},
				{http.StatusTooManyRequests, "0", toMidnight},
			} {
				resp, body := call(t, in.proxy+"/x", key)
				got := [3]string{strconv.Itoa(resp.StatusCode), resp.Header.Get("X-Quota-Remaining"), resp.Header.Get("X-Quota-Reset")}
				if got != [3]string{strconv.Itoa(want.status), want.remaining, want.reset} {
					t.Errorf("request %d at %v (%v): status, X-Quota-Remaining, X-Quota-Reset = %q, want %q (local midnight is %v)\n%s",
						i+1, before, before.UTC(), got, [3]string{strconv.Itoa(want.status), want.remaining, want.reset}, midnight.UTC(), body)
				}
				if resp.StatusCode == http.StatusTooManyRequests {
					if e := decodeError(t, body); e.Error != "quota_exceeded" || e.RetryAfter != 600 {
						t.Errorf("refusal %+v, want quota_exceeded with retry_after_seconds 600 (to local midnight)", e)
					}
				}
			}

			// Twenty minutes on: past local midnight, a new day.
			clock.Store(after.UnixNano())
			dayLen := midnight.AddDate(0, 0, 1).Sub(midnight)
			resp, body := call(t, in.proxy+"/x", key)
			wantReset := strconv.Itoa(int((dayLen - 10*time.Minute) / time.Second)) // "85800"
			if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Quota-Remaining") != "1" || resp.Header.Get("X-Quota-Reset") != wantReset {
				t.Errorf("after local midnight, at %v (%v): %d, X-Quota-Remaining %q, X-Quota-Reset %q; want 200, \"1\", %q (a new local day)\n%s",
					after, after.UTC(), resp.StatusCode, resp.Header.Get("X-Quota-Remaining"), resp.Header.Get("X-Quota-Reset"), wantReset, body)
			}
		})
	}
}
