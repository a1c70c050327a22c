package redisstore

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/storetest"
)

// FuzzReply: whatever bytes come back as a decide call's reply (another
// script answering under this one's SHA, something in the way, a bug of
// ours), reading them never panics: a short reply is an error, and
// numbers out of range make odd statuses, not a crash. The seeds are
// replies the script gives: admitted, refused by a window, a quota
// counter missing.
func FuzzReply(f *testing.F) {
	clock := storetest.NewClock(storetest.Start)
	s := New(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), &Options{Now: clock.Now})
	defer s.Close()
	limits := []limiter.Limit{
		{Name: "1s", Key: "{user:u}key:k/r1s", Limit: 10, Window: time.Second},
		{Name: "1m", Key: "{user:u}key:k/r1m", Limit: 100, Window: time.Minute},
		{Name: "shadow-1h", Key: "{user:u}key:k/r1h", Limit: 1000, Window: time.Hour, Shadow: true},
		{Name: "daily", Key: "{user:u}user:u/qdaily", Limit: 10000, Period: daily},
	}
	now := clock.Now()
	var items []item
	for i := range limits {
		items = append(items, s.newItem(&limits[i], 1, now, items))
	}
	groups := s.group(items)
	if len(groups) != 1 {
		f.Fatalf("%d groups, want the one slot of the user's tag", len(groups))
	}
	t := now.UnixMicro()
	reply := func(nums ...int64) []byte {
		var p packer
		for _, x := range nums {
			p = p.num(x)
		}
		return p
	}
	f.Add(reply(t, 3, 0, 40, 0, 500, 0, 7, 7))                // admitted: per window before and x, the quota's used and seq
	f.Add(reply(t, 10, 1, 40, 0, 500, 0, 7, 7, t+20000))      // the 1s window refuses: when it frees follows
	f.Add(reply(t, 3, 0, 40, 0, 1000, 0, 7, 7, t+3600000000)) // only the shadow limit refuses
	f.Add(reply(t, 0, 0, 0, 0, 0, 0, -1, 0))                  // the quota counter is missing
	f.Add(reply(t, 3, 0, 40, 0, 500, 0))                      // short
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, res []byte) {
		c := s.decideCall(limits, items, groups[0], 1)
		n, err := c.decode(string(res))
		if err != nil {
			return
		}
		if n > len(res) {
			t.Fatalf("decode read %d bytes of %d", n, len(res))
		}
		d := limiter.Decision{Statuses: make([]limiter.Status, len(limits))}
		s.apply(&d, limits, items, groups[0], c, now)
		s.undoCall(c, false)
		s.undoCall(c, true)
	})
}
