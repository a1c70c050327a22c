package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/redisstore"
)

// redisServer starts a redis-server of the test's own with args on a
// free loopback port, waits until it answers, and kills it when the test
// ends. It returns its address, a client of it and its process.
func redisServer(t *testing.T, args ...string) (string, *redis.Client, *os.Process) {
	return redisServerWith(t, redis.Options{}, args...)
}

// redisServerWith is redisServer with a client of options opt. The
// server listens on opt.Addr, or a free port when it is empty; with
// opt.TLSConfig it takes TLS connections alone, with the certificates
// that args name.
func redisServerWith(t *testing.T, opt redis.Options, args ...string) (string, *redis.Client, *os.Process) {
	t.Helper()
	addr := opt.Addr
	if addr == "" {
		addr = freeAddr(t)
	}
	_, port, _ := net.SplitHostPort(addr)
	listen := []string{"--port", port}
	if opt.TLSConfig != nil {
		listen = []string{"--port", "0", "--tls-port", port}
	}
	cmd := exec.Command("redis-server", append(args, append(listen, "--bind", "127.0.0.1")...)...)
	cmd.Dir = t.TempDir()
	if err := cmd.Start(); err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	opt.Addr = addr
	rdb := redis.NewClient(&opt)
	t.Cleanup(func() { rdb.Close() })
	waitFor(t, 10*time.Second, "redis-server on "+addr, func() bool {
		return rdb.Ping(context.Background()).Err() == nil
	}, &logBuffer{})
	return addr, rdb, cmd.Process
}

// TestSentinelFailover: the master behind a Sentinel goes away and the
// Sentinel promotes its replica. With failure_mode local the proxy
// answers throughout without a 5xx, and then works on the new master.
// It runs a master, a replica and a Sentinel of its own (the Sentinel of
// GAIA_TEST_REDIS_SENTINEL is shared by other tests, and a failover
// would pull their Redis away).
func TestSentinelFailover(t *testing.T) {
	testenv.RedisSentinel(t) // the machine can run Sentinel tests
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	masterAddr, master, masterProc := redisServer(t, noDisk...)
	mhost, mport, _ := net.SplitHostPort(masterAddr)
	replicaAddr, replica, _ := redisServer(t, append(noDisk, "--replicaof", mhost, mport)...)
	conf := filepath.Join(t.TempDir(), "sentinel.conf")
	err := os.WriteFile(conf, []byte(fmt.Sprintf("sentinel monitor failover %s %s 1\n"+
		"sentinel down-after-milliseconds failover 500\n"+
		"sentinel failover-timeout failover 5000\n", mhost, mport)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	sentinelAddr, sentinel, _ := redisServer(t, conf, "--sentinel")
	// A Sentinel learns a master's replicas from its INFO, every 10 s.
	waitFor(t, 30*time.Second, "the Sentinel knows the replica", func() bool {
		rs, err := sentinel.Do(context.Background(), "SENTINEL", "REPLICAS", "failover").Slice()
		return err == nil && len(rs) == 1 && strings.Contains(fmt.Sprint(rs), strings.Split(replicaAddr, ":")[1])
	}, &logBuffer{})

	in, _, _ := startOnRedis(t, fmt.Sprintf(`sentinel: {master: failover, addrs: [%q]}, timeout: 50ms, failure_mode: local`, sentinelAddr))
	// Anonymous requests: plan anonymous, 1,000 a second, which the
	// requests below stay far under however long the failover takes.
	if resp, body := call(t, in.proxy+"/f"); resp.StatusCode != 200 {
		t.Fatalf("before the failover: %d %s", resp.StatusCode, body)
	}
	if n, err := master.DBSize(context.Background()).Result(); err != nil || n == 0 {
		t.Fatalf("the master holds %d keys (%v), want the limiter's", n, err)
	}

	during := failover(t, in, masterProc, replica, "redis-sentinel")
	// The failover was felt: decisions that found no master failed over
	// to the local limiter (go-redis asks the Sentinel again by itself,
	// so the breaker need not open).
	_, metrics := call(t, in.admin+"/metrics")
	if !regexp.MustCompile(`(?m)^gaia_redis_errors_total [1-9]`).MatchString(metrics) {
		t.Errorf("no failed round trip to Redis counted while its master was away (%d requests then):\n%s", during, metrics)
	}
}

// failover kills master (as a crash: no goodbye to anyone) and sends
// requests to in until replica has been promoted; none may fail. Then
// it waits until the proxy is back on Redis: /health says redis is ok in
// mode and the new master runs the proxy's scripts (a replica gets only
// their writes, and a first NOSCRIPT counts as a failed call). It
// returns the number of requests sent during the promotion.
func failover(t *testing.T, in *instance, master *os.Process, replica *redis.Client, mode string) int {
	t.Helper()
	ctx := context.Background()
	if err := master.Kill(); err != nil {
		t.Fatal(err)
	}
	promoted := func() bool {
		role, err := replica.Do(ctx, "ROLE").Slice()
		return err == nil && len(role) > 0 && role[0] == "master"
	}
	deadline := time.Now().Add(time.Minute)
	during := 0
	for ; !promoted(); during++ { // requests all the while: none may fail
		if resp, body := call(t, in.proxy+"/f"); resp.StatusCode != 200 {
			t.Fatalf("during the failover: %d %s", resp.StatusCode, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica was not promoted within a minute; log:\n%s", in.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, 30*time.Second, "redis ok on /health and scripts on the new master", func() bool {
		if resp, body := call(t, in.proxy+"/f"); resp.StatusCode != 200 {
			t.Fatalf("after the failover: %d %s", resp.StatusCode, body)
		}
		_, health := call(t, in.admin+"/health")
		stats, err := replica.Info(ctx, "commandstats").Result()
		var calls, failed int
		if m := regexp.MustCompile(`cmdstat_evalsha:calls=(\d+),.*failed_calls=(\d+)`).FindStringSubmatch(stats); m != nil {
			calls, _ = strconv.Atoi(m[1])
			failed, _ = strconv.Atoi(m[2])
		}
		return err == nil && calls-failed > 0 && strings.Contains(health, fmt.Sprintf(`"redis":{"status":"ok","mode":%q}`, mode))
	}, in.logs)
	t.Logf("%d requests while the replica was promoted, all answered 200", during)
	return during
}

// clusterNode is one redis-server of a test's own Redis Cluster.
type clusterNode struct {
	addr string
	rdb  *redis.Client
	proc *os.Process
	id   string
}

// ownCluster starts a Redis Cluster of the test's own: masters masters
// sharing the slots evenly, and spares nodes that have joined it with no
// slots (a test makes them replicas, or moves slots to them), with a
// short node timeout. It returns the masters, then the spares, once
// every node sees the cluster ok.
func ownCluster(t *testing.T, masters, spares int) []*clusterNode {
	t.Helper()
	testenv.RedisClusterAddrs(t) // the machine can run Cluster tests
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	ctx := context.Background()
	nodes := make([]*clusterNode, masters+spares)
	for i := range nodes {
		addr, rdb, proc := redisServer(t, append(slices.Clone(noDisk), "--cluster-enabled", "yes", "--cluster-node-timeout", "500", "--repl-diskless-sync-delay", "0")...)
		id, err := rdb.Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = &clusterNode{addr, rdb, proc, id}
	}
	for i, m := range nodes[:masters] {
		lo, hi := i*16384/masters, (i+1)*16384/masters-1
		if err := m.rdb.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes[1:] {
		host, port, _ := net.SplitHostPort(n.addr)
		if err := nodes[0].rdb.ClusterMeet(ctx, host, port).Err(); err != nil {
			t.Fatal(err)
		}
	}
	known := fmt.Sprintf("cluster_known_nodes:%d", len(nodes))
	waitFor(t, 20*time.Second, "the cluster forms", func() bool {
		for _, n := range nodes {
			info, err := n.rdb.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, known) {
				return false
			}
		}
		return true
	}, &logBuffer{})
	return nodes
}

// TestClusterFailover: the Redis Cluster master holding the proxy's
// counters goes away and the cluster promotes its replica. With
// failure_mode local the proxy answers throughout without a 5xx, and
// then works on the new master. It runs a cluster of its own (three
// masters, so that a majority can elect, and one replica) with a short
// node timeout.
func TestClusterFailover(t *testing.T) {
	ctx := context.Background()
	nodes := ownCluster(t, 3, 1)
	masters, spare := nodes[:3], nodes[3]

	in, _, _ := startOnRedis(t, fmt.Sprintf(`cluster_addrs: [%q], timeout: 50ms, failure_mode: local`, masters[0].addr))
	// Anonymous requests (plan anonymous, 1,000 a second: far above what
	// the test sends) keep one subject's counters on one master.
	if resp, body := call(t, in.proxy+"/f"); resp.StatusCode != 200 {
		t.Fatalf("before the failover: %d %s", resp.StatusCode, body)
	}
	var owner *clusterNode
	for _, m := range masters {
		if len(counterKeys(t, m)) > 0 {
			owner = m
		}
	}
	if owner == nil {
		t.Fatal("no master holds the limiter's counters")
	}
	if err := spare.rdb.Do(ctx, "CLUSTER", "REPLICATE", owner.id).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the replica is in sync", func() bool {
		info, err := spare.rdb.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	}, &logBuffer{})

	failover(t, in, owner.proc, spare.rdb, "redis-cluster")
}

// TestClusterReshard moves the slot holding a subject's counters to
// another master while the proxy serves it (as redis-cli --cluster
// reshard does: IMPORTING, MIGRATING, MIGRATE of its keys, then the slot
// given away), with failure_mode closed so that no decision can hide
// behind a fallback: every request is answered from Redis, and the
// counters move with the slot, so the limit neither resets nor
// over-admits.
func TestClusterReshard(t *testing.T) {
	ctx := context.Background()
	nodes := ownCluster(t, 2, 1)
	in, up, _ := startOnRedis(t, fmt.Sprintf(`cluster_addrs: [%q], timeout: 500ms, failure_mode: closed`, nodes[0].addr))
	// Plan small: 5 an hour for key-small; 2 now, 3 during the move, 2
	// after it.
	codes := []int{}
	ask := func() {
		resp, body := call(t, in.proxy+"/s", "X-API-Key: key-small")
		if resp.StatusCode != 200 && resp.StatusCode != 429 {
			t.Fatalf("request %d: %d %s\n%s", len(codes)+1, resp.StatusCode, body, in.logs)
		}
		codes = append(codes, resp.StatusCode)
	}
	ask()
	ask()
	var src *clusterNode
	var keys []string
	for _, m := range nodes[:2] {
		if ks := counterKeys(t, m); len(ks) > 0 {
			src, keys = m, ks
		}
	}
	if src == nil {
		t.Fatal("no master holds the limiter's counters")
	}
	slot, err := src.rdb.ClusterKeySlot(ctx, keys[0]).Result()
	if err != nil {
		t.Fatal(err)
	}
	dst := nodes[2]
	do := func(n *clusterNode, args ...any) {
		t.Helper()
		if err := n.rdb.Do(ctx, args...).Err(); err != nil {
			t.Fatalf("%s on %s: %v", fmt.Sprint(args...), n.addr, err)
		}
	}
	do(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src.id)
	do(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst.id)
	ask() // the keys are still on src: it answers
	host, port, _ := net.SplitHostPort(dst.addr)
	inSlot, err := src.rdb.ClusterGetKeysInSlot(ctx, int(slot), 100).Result()
	if err != nil || len(inSlot) == 0 {
		t.Fatalf("keys in slot %d: %v, %v", slot, inSlot, err)
	}
	do(src, append([]any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}, anys(inSlot)...)...)
	ask() // src sends the client to dst (ASK): dst answers
	for _, n := range nodes {
		do(n, "CLUSTER", "SETSLOT", slot, "NODE", dst.id)
	}
	ask() // the slot is dst's (MOVED)
	ask()
	ask()
	if want := []int{200, 200, 200, 200, 200, 429, 429}; !slices.Equal(codes, want) {
		t.Errorf("answers %v, want %v: the counters must move with the slot", codes, want)
	}
	if n, _ := up.seen("/s"); n != 5 {
		t.Errorf("upstream saw %d requests, want 5", n)
	}
	if n, err := dst.rdb.Exists(ctx, keys...).Result(); err != nil || n != int64(len(keys)) {
		t.Errorf("%d of the counters %q on the new master (%v)", n, keys, err)
	}
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// TestCountersWhileSlotsMove: a walk of the quota counters (the ledger's
// resync) during which a slot holding some of them changes master fails,
// rather than report a walk that may have missed them; once the slots
// stay put, a walk reads every counter.
func TestCountersWhileSlotsMove(t *testing.T) {
	ctx := context.Background()
	nodes := ownCluster(t, 2, 1)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{nodes[0].addr}})
	t.Cleanup(func() { rdb.Close() })
	const counters = 2000
	start := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	for i := range counters {
		key := fmt.Sprintf("gaia:{user:u%d}user:u%d/qdaily:p%d", i, i, start.Unix())
		if err := rdb.Set(ctx, key, counterBytes(1, 1, start.AddDate(0, 0, 1)), time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// A slot of the first master's that holds counters.
	owner, spare := nodes[0], nodes[2]
	slot, err := rdb.ClusterKeySlot(ctx, "{user:u0}").Result()
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; slotOwner(t, rdb, slot) != owner.addr; i++ {
		if slot, err = rdb.ClusterKeySlot(ctx, fmt.Sprintf("{user:u%d}", i)).Result(); err != nil {
			t.Fatal(err)
		}
	}
	s := redisstore.New(rdb, nil)
	t.Cleanup(func() { s.Close() })
	// walk walks the counters, calling during after the first batch.
	walk := func(during func()) (int, error) {
		read := 0
		err := s.Counters(ctx, func(vs []limiter.CounterValue) error {
			if read == 0 && during != nil {
				during()
			}
			read += len(vs)
			return nil
		})
		return read, err
	}
	atRest := func(at *clusterNode) {
		t.Helper()
		waitFor(t, 10*time.Second, "every node sees the slot at "+at.addr, func() bool {
			for _, n := range nodes {
				if slotOwner(t, n.rdb, slot) != at.addr {
					return false
				}
			}
			return true
		}, &logBuffer{})
		if read, err := walk(nil); err != nil || read != counters {
			t.Errorf("a walk with the slots at rest: %v, %d counters, want all %d", err, read, counters)
		}
	}
	failed := func(what string, read int, err error) {
		t.Helper()
		if !errors.Is(err, redisstore.ErrSlotsMoving) {
			t.Errorf("a walk %s: %v after %d counters, want it to fail", what, err, read)
		}
	}

	// Keys moved, the slot not yet handed over: the slot map is as it
	// was, and SCAN shows the keys nowhere already read.
	read, err := walk(func() { startMigration(t, slot, owner, spare) })
	failed("while a slot's keys moved", read, err)
	read, err = walk(nil)
	failed("while a slot is migrating", read, err)
	handOver(t, nodes, slot, owner, spare)
	atRest(spare)

	// The whole move during the walk.
	read, err = walk(func() { migrateSlot(t, nodes, slot, spare, owner) })
	failed("while a slot moved", read, err)
	atRest(owner)
}

// counterKeys returns the limiter's keys on node n: every key but the
// replicas' heartbeats, which have a slot of their own.
func counterKeys(t *testing.T, n *clusterNode) []string {
	t.Helper()
	keys, err := n.rdb.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(keys, func(k string) bool { return strings.HasSuffix(k, "{replicas}") })
}

// migrateSlot moves slot, with its keys, from src to dst, as
// redis-cli --cluster reshard does.
func migrateSlot(t *testing.T, nodes []*clusterNode, slot int64, src, dst *clusterNode) {
	t.Helper()
	startMigration(t, slot, src, dst)
	handOver(t, nodes, slot, src, dst)
}

// startMigration marks slot migrating from src to dst and moves its keys.
func startMigration(t *testing.T, slot int64, src, dst *clusterNode) {
	t.Helper()
	ctx := context.Background()
	do := func(n *clusterNode, args ...any) {
		t.Helper()
		if err := n.rdb.Do(ctx, args...).Err(); err != nil {
			t.Fatalf("%v on %s: %v", args, n.addr, err)
		}
	}
	do(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src.id)
	do(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst.id)
	keys, err := src.rdb.ClusterGetKeysInSlot(ctx, int(slot), 10000).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) > 0 {
		host, port, _ := net.SplitHostPort(dst.addr)
		do(src, append([]any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}, anys(keys)...)...)
	}
}

// handOver gives slot, migrating from src, to dst on every node.
func handOver(t *testing.T, nodes []*clusterNode, slot int64, src, dst *clusterNode) {
	t.Helper()
	ctx := context.Background()
	// dst first. src, left with no slot, turns itself into a replica of
	// dst as soon as it learns, and a replica takes no SETSLOT: it knows.
	if err := dst.rdb.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dst.id).Err(); err != nil {
		t.Fatalf("SETSLOT %d NODE on %s: %v", slot, dst.addr, err)
	}
	for _, n := range nodes {
		if n == dst {
			continue
		}
		err := n.rdb.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dst.id).Err()
		if err != nil && !(n == src && strings.Contains(err.Error(), "only with masters")) {
			t.Fatalf("SETSLOT %d NODE on %s: %v", slot, n.addr, err)
		}
	}
}

// slotOwner returns the address of the master c says serves slot.
func slotOwner(t *testing.T, c interface {
	ClusterSlots(context.Context) *redis.ClusterSlotsCmd
}, slot int64) string {
	t.Helper()
	slots, err := c.ClusterSlots(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, sl := range slots {
		if int64(sl.Start) <= slot && slot <= int64(sl.End) && len(sl.Nodes) > 0 {
			return sl.Nodes[0].Addr
		}
	}
	return ""
}
