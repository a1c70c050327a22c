package quota

import (
	"context"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// Store is a durable quota ledger: quota/boltstore (embedded) or
// quota/pgstore (PostgreSQL). Implementations are safe for concurrent
// use and pass quotatest.RunStore.
//
// A counter is identified by its Key and its Start to the second (period
// starts are whole seconds); the Location of Start does not matter.
// Values are absolute (the usage so far, not an increment) and versioned
// by Seq, and a Store keeps, per counter, the value with the highest Seq
// it was ever given. So writes are idempotent and order-independent: a
// batch written twice, or an old batch retried after a newer one, changes
// nothing. That is why a crash between the hot path and the ledger
// neither loses nor double-counts usage: whatever reaches the ledger
// later (a retry, a replay, the hot path's next value) replaces an older
// value instead of adding to it.
type Store interface {
	// Load returns the stored value of each counter, in order, each
	// with its Counter as given. A counter the store never saw loads as
	// Used 0, Seq 0.
	Load(ctx context.Context, counters []limiter.Counter) ([]limiter.CounterValue, error)
	// Write stores values in one transaction, keeping for each counter
	// the value with the highest Seq; on error nothing was written. It
	// returns, in no particular order, the value it holds for each
	// counter whose highest written value it did not take: a higher Seq,
	// or the same Seq with other usage. A value merely older than one
	// written before is such a counter; so is a hot path that went
	// back, behind the ledger (see Raiser).
	Write(ctx context.Context, values []limiter.CounterValue) (ahead []limiter.CounterValue, err error)
}

// counterID identifies a counter as a Store does: Key and Start to the
// second, whatever the Location.
type counterID struct {
	key   string
	start int64
}

func idOf(c limiter.Counter) counterID { return counterID{c.Key, c.Start.Unix()} }
