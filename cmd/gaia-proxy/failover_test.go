package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
)

// redisServer starts a redis-server of the test's own with args on a
// free loopback port, waits until it answers, and kills it when the test
// ends. It returns its address, a client of it and its process.
func redisServer(t *testing.T, args ...string) (string, *redis.Client, *os.Process) {
	return redisServerWith(t, redis.Options{}, args...)
}

// redisServerWith is redisServer with a client of options opt (its Addr
// set here). With opt.TLSConfig the server takes TLS connections alone,
// with the certificates that args name.
func redisServerWith(t *testing.T, opt redis.Options, args ...string) (string, *redis.Client, *os.Process) {
	t.Helper()
	addr := freeAddr(t)
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

	prefix := testenv.Prefix(t)
	up := newUpstream(t)
	dir := t.TempDir()
	text := strings.NewReplacer(
		`redis: {url: "REDISURL", key_prefix: "PREFIX", timeout: TIMEOUT, failure_mode: MODE}`,
		fmt.Sprintf(`redis: {sentinel: {master: failover, addrs: [%q]}, key_prefix: %q, timeout: 50ms, failure_mode: local}`, sentinelAddr, prefix),
	).Replace(redisConfig)
	in := start(t, writeConfig(t, filepath.Join(dir, "gaia.yaml"), text, up.URL, dir))
	// Anonymous requests: plan anonymous, 1,000 a second, which the
	// requests below stay far under however long the failover takes.
	if resp, body := call(t, in.proxy+"/f"); resp.StatusCode != 200 {
		t.Fatalf("before the failover: %d %s", resp.StatusCode, body)
	}
	if n, err := master.DBSize(context.Background()).Result(); err != nil || n == 0 {
		t.Fatalf("the master holds %d keys (%v), want the limiter's", n, err)
	}

	if err := masterProc.Kill(); err != nil { // as a crash: no goodbye to anyone
		t.Fatal(err)
	}
	promoted := func() bool {
		role, err := replica.Do(context.Background(), "ROLE").Slice()
		return err == nil && len(role) > 0 && role[0] == "master"
	}
	deadline := time.Now().Add(time.Minute)
	during := 0
	for ; !promoted(); during++ { // requests all the while: none may fail
		if resp, body := call(t, in.proxy+"/f"); resp.StatusCode != 200 {
			t.Fatalf("during the failover: %d %s", resp.StatusCode, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Sentinel did not promote the replica within a minute; log:\n%s", in.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, 30*time.Second, "redis ok on /health after the failover", func() bool {
		if resp, body := call(t, in.proxy+"/f"); resp.StatusCode != 200 {
			t.Fatalf("after the failover: %d %s", resp.StatusCode, body)
		}
		_, body := call(t, in.admin+"/health")
		return strings.Contains(body, `"redis":{"status":"ok","mode":"redis-sentinel"}`)
	}, in.logs)
	// The failover was felt: decisions that found no master failed over
	// to the local limiter (go-redis asks the Sentinel again by itself,
	// so the breaker need not open).
	_, metrics := call(t, in.admin+"/metrics")
	if !regexp.MustCompile(`(?m)^gaia_redis_errors_total [1-9]`).MatchString(metrics) {
		t.Errorf("no failed round trip to Redis counted while its master was away (%d requests then):\n%s", during, metrics)
	}
	t.Logf("%d requests while the Sentinel promoted the replica, all answered 200", during)
	// A replica gets a script's writes, not the script: scripts ran on
	// the new master only if the proxy sent them there (a first NOSCRIPT
	// counts as a failed call).
	stats, err := replica.Info(context.Background(), "commandstats").Result()
	var calls, failed int
	if m := regexp.MustCompile(`cmdstat_evalsha:calls=(\d+),.*failed_calls=(\d+)`).FindStringSubmatch(stats); m != nil {
		calls, _ = strconv.Atoi(m[1])
		failed, _ = strconv.Atoi(m[2])
	}
	if err != nil || calls-failed < 1 {
		t.Errorf("no script ran on the new master (%v):\n%s", err, stats)
	}
}
