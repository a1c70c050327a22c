package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// scanCount is how many keys one SCAN asks for, and so about how many
// counters one batch of Counters holds.
const scanCount = 1000

// Counters calls fn with every quota counter the store holds, a batch
// (up to about a thousand) at a time, as the hot path has it now: its
// Key, period start, usage and seq. It reads every master of a cluster.
// The quota ledger uses it to catch up with usage that a killed process
// never wrote (quota.RecorderOptions.Source).
//
// It walks the keyspace with SCAN, so it sees every counter that exists
// from its start to its end, and maybe some twice; one created or
// dropped meanwhile may be missed. On a cluster whose slots move or are
// moving during the walk (a failover, a reshard) it fails: see
// clusterCounters. A counter's Key is read back from its Redis key,
// which works for Keys that carry their own hash tag, as
// limiter.Limit's Keys do.
func (s *Store) Counters(ctx context.Context, fn func([]limiter.CounterValue) error) error {
	match := globEscape(s.prefix) + "*:p[0-9]*"
	if c, ok := s.rdb.(*redis.ClusterClient); ok {
		return s.clusterCounters(ctx, c, match, fn)
	}
	node, ok := s.rdb.(redis.Cmdable)
	if !ok {
		return errors.New("redisstore: counters: the client cannot scan")
	}
	return s.scanCounters(ctx, node, match, fn)
}

// scanCounters is Counters on one node.
func (s *Store) scanCounters(ctx context.Context, node redis.Cmdable, match string, fn func([]limiter.CounterValue) error) error {
	var cursor uint64
	for {
		keys, next, err := node.Scan(ctx, cursor, match, scanCount).Result()
		if err != nil {
			return fmt.Errorf("redisstore: counters: scan: %w", err)
		}
		if len(keys) > 0 {
			// GET one by one in a pipeline: a cluster refuses an MGET of
			// keys in different slots, even on one node.
			pipe := node.Pipeline()
			gets := make([]*redis.StringCmd, len(keys))
			for i, k := range keys {
				gets[i] = pipe.Get(ctx, k)
			}
			pipe.Exec(ctx) // each GET's own error is read below
			batch := make([]limiter.CounterValue, 0, len(keys))
			for i, k := range keys {
				v, err := gets[i].Result()
				_, movedTo := redis.IsMovedError(err)
				_, asked := redis.IsAskError(err)
				switch {
				case err == nil:
				case errors.Is(err, redis.Nil):
					continue // gone since the scan
				case movedTo || asked:
					// A failover or a reshard: this node's counters are
					// elsewhere now, maybe on a master already read.
					return errors.Join(ErrSlotsMoving, err)
				default:
					return fmt.Errorf("redisstore: counters: %w", err)
				}
				if cv, ok := s.counterValue(k, v); ok {
					batch = append(batch, cv)
				}
			}
			if len(batch) > 0 {
				if err := fn(batch); err != nil {
					return err
				}
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// ErrSlotsMoving fails a walk of Counters on a cluster whose slots
// moved, or were moving, while it ran: counters may have been where it
// had already looked, or was not looking. A later walk may succeed.
var ErrSlotsMoving = errors.New("redisstore: counters: slots moved during the walk, read again later")

// clusterCounters is Counters on a cluster: every master in turn (so fn
// need not be safe for concurrent use), with the slots at rest. Keys
// move between masters before their slot does (a reshard MIGRATEs them,
// then hands the slot over), and a master that became a replica answers
// SCAN as before, so the walk fails unless the slot map is the same
// before and after it, no slot is migrating then, and it read every
// master the map names.
func (s *Store) clusterCounters(ctx context.Context, c *redis.ClusterClient, match string, fn func([]limiter.CounterValue) error) error {
	before, owners, err := slotMap(ctx, c)
	if err != nil {
		return err
	}
	masters, err := mastersAtRest(ctx, c)
	if err != nil {
		return err
	}
	for _, m := range masters {
		delete(owners, m.Options().Addr)
	}
	if len(owners) > 0 {
		return ErrSlotsMoving // the client's view lags the map's
	}
	for _, m := range masters {
		if err := s.scanCounters(ctx, m, match, fn); err != nil {
			return err
		}
	}
	if _, err := mastersAtRest(ctx, c); err != nil {
		return err
	}
	if after, _, err := slotMap(ctx, c); err != nil || after != before {
		return errors.Join(ErrSlotsMoving, err)
	}
	return nil
}

// mastersAtRest returns the cluster's masters, or ErrSlotsMoving when one
// of them has a slot migrating to or from it.
func mastersAtRest(ctx context.Context, c *redis.ClusterClient) ([]*redis.Client, error) {
	var (
		mu      sync.Mutex
		masters []*redis.Client
	)
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		nodes, err := m.ClusterNodes(ctx).Result()
		if err != nil {
			return err
		}
		// A node shows its open migrations on its own line:
		// "[slot->-id]" or "[slot-<-id]".
		for line := range strings.Lines(nodes) {
			if strings.Contains(line, "myself") && (strings.Contains(line, "->-") || strings.Contains(line, "-<-")) {
				return ErrSlotsMoving
			}
		}
		mu.Lock()
		defer mu.Unlock()
		masters = append(masters, m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: counters: %w", err)
	}
	return masters, nil
}

// slotMap returns which master (by node id) serves which slots, as a
// string to compare, and the masters' addresses.
func slotMap(ctx context.Context, c *redis.ClusterClient) (string, map[string]bool, error) {
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		return "", nil, fmt.Errorf("redisstore: counters: %w", err)
	}
	var b strings.Builder
	owners := map[string]bool{}
	for _, sl := range slots {
		master := ""
		if len(sl.Nodes) > 0 {
			master = sl.Nodes[0].ID
			owners[sl.Nodes[0].Addr] = true
		}
		fmt.Fprintf(&b, "%d-%d %s\n", sl.Start, sl.End, master)
	}
	return b.String(), owners, nil
}

// counterValue reads the quota counter stored under Redis key k with
// value v (quotaKey and store.lua's 24 bytes: used, seq, period end);
// false for any other key.
func (s *Store) counterValue(k, v string) (limiter.CounterValue, bool) {
	c, ok := s.counterOf(k)
	if !ok || len(v) != 24 {
		return limiter.CounterValue{}, false
	}
	return limiter.CounterValue{Counter: c, Used: num(v, 0), Seq: num(v, 8)}, true
}

// counterOf reads a quota counter's Key and period start back from its
// Redis key, the inverse of quotaKey for Keys with a hash tag of their
// own (which quotaKey keeps as they are); false for keys quotaKey does
// not make.
func (s *Store) counterOf(k string) (limiter.Counter, bool) {
	rest, ok := strings.CutPrefix(k, s.prefix)
	p := strings.LastIndex(rest, ":p")
	if !ok || p < 0 {
		return limiter.Counter{}, false
	}
	key, digits := rest[:p], rest[p+2:]
	micro := strings.HasSuffix(digits, "us")
	if micro {
		digits = digits[:len(digits)-2]
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n < 0 || digits != strconv.FormatInt(n, 10) || tagEnd(key) < 0 {
		return limiter.Counter{}, false
	}
	start := time.Unix(n, 0)
	if micro {
		start = time.UnixMicro(n)
	}
	if s.quotaKey(key, start) != k {
		return limiter.Counter{}, false
	}
	return limiter.Counter{Key: key, Start: start}, true
}

// globEscape quotes the characters SCAN's MATCH pattern treats as
// special, so that s matches itself.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// heartbeatScript records replica ARGV[1] alive at the Redis clock (ms)
// in hash KEYS[1], and removes the replicas whose last heartbeat is more
// than ARGV[2] ms old, returning how many: each is removed by exactly
// one call. The hash expires ARGV[3] ms after the last heartbeat, so it
// does not outlive every replica for long.
const heartbeatScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale, claimed = tonumber(ARGV[2]), 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] and now - tonumber(all[i + 1]) > stale then
    redis.call('HDEL', KEYS[1], all[i])
    claimed = claimed + 1
  end
end
redis.call('HSET', KEYS[1], ARGV[1], now)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return claimed
`

// replicasTTL is how long the heartbeats of replicas outlive the last
// one; then a new replica's own resync at start covers what they left.
const replicasTTL = 24 * time.Hour

// replicasKey is the hash of the replicas' heartbeats, in one slot.
func (s *Store) replicasKey() string { return s.prefix + "{replicas}" }

// Heartbeat records that the process named id is alive, by the Redis
// clock, and claims the processes whose last heartbeat is older than
// stale: they stopped without Leave, so what they had not written to
// the ledger is only in Redis. Each is claimed by exactly one caller,
// which returns how many it claimed (quota.Recorder then resyncs).
func (s *Store) Heartbeat(ctx context.Context, id string, stale time.Duration) (int, error) {
	n, err := s.rdb.Eval(ctx, heartbeatScript, []string{s.replicasKey()}, id, stale.Milliseconds(), replicasTTL.Milliseconds()).Int()
	if err != nil {
		return 0, fmt.Errorf("redisstore: heartbeat: %w", err)
	}
	return n, nil
}

// Leave removes the heartbeat of the process named id: it stopped after
// writing everything to the ledger, and nobody need resync for it.
func (s *Store) Leave(ctx context.Context, id string) error {
	err := s.rdb.Eval(ctx, "return redis.call('HDEL', KEYS[1], ARGV[1])", []string{s.replicasKey()}, id).Err()
	if err != nil {
		return fmt.Errorf("redisstore: leave: %w", err)
	}
	return nil
}
