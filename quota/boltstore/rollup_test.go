package boltstore

import (
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

// FuzzRollupEncoding: a roll-up comes back from its key and value as it
// went in, and no key or value makes decodeRollup panic.
func FuzzRollupEncoding(f *testing.F) {
	f.Add(int64(1795813200), "user:alice", "default", "alice", "replica-1", int64(7), int64(2), int64(1), []byte{1, 0, 0})
	f.Add(int64(0), "", "", "", "", int64(0), int64(0), int64(0), []byte(`{"Allowed":3}`))
	f.Add(int64(1795813260), "ip:::1", "search", "", "r", int64(1<<40), int64(0), int64(5), []byte{1, 0xff})
	f.Fuzz(func(t *testing.T, minute int64, subject, route, user, replica string, allowed, limited, exceeded int64, raw []byte) {
		_, _ = decodeRollup(raw, raw)
		if minute < 0 || allowed < 0 || limited < 0 || exceeded < 0 {
			return // the journal counts up from zero, after 1970
		}
		for _, s := range []string{subject, route, replica} {
			if strings.IndexByte(s, 0) >= 0 {
				return // the journal's strings have no NUL bytes
			}
		}
		r := quota.Rollup{
			Minute: time.Unix(minute, 0).UTC(), Subject: subject, Route: route, User: user, Replica: replica,
			Allowed: allowed, RateLimited: limited, QuotaExceeded: exceeded,
		}
		got, err := decodeRollup(rollupKey(r), encodeRollup(r))
		if err != nil {
			t.Fatalf("decode(encode(%+v)): %v", r, err)
		}
		if got != r {
			t.Fatalf("decode(encode(%+v)) = %+v", r, got)
		}
	})
}
