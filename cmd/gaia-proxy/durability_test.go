package main

import (
	"bufio"
	"context"
	bin "encoding/binary"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/internal/relay"
	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/limiter/redisstore"
	"github.com/gaia-proxy/gaia-proxy/migrations"
	"github.com/gaia-proxy/gaia-proxy/quota"
	"github.com/gaia-proxy/gaia-proxy/quota/pgstore"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

const durableConfig = `
listen: LISTEN
upstream: {{UPSTREAM}}
upstream_timeout: 10s
admin: {listen: 127.0.0.1:0}
data_dir: {{DATA}}
redis: {url: "REDISURL", key_prefix: "PREFIX", timeout: 2s, failure_mode: closed}
database: {url: "DBURL"}
quota: {timezone: {{ZONE}}, flush_interval: FLUSH}
defaults: {plan: metered}
plans:
  anonymous: {rate: [{limit: 1000, window: 1s}]}
  metered:
    rate: [{limit: 1000000, window: 1s}]
    quota: [{limit: QUOTA, period: daily}]
keys:
  - {id: k, key: key-k}
`

// durableFile writes durableConfig with the given settings.
func durableFile(t *testing.T, up *upstream, listen, redisURL, dbURL, flush string, quota int) string {
	t.Helper()
	dir := t.TempDir()
	text := strings.NewReplacer("LISTEN", listen, "REDISURL", redisURL, "PREFIX", testenv.Prefix(t),
		"DBURL", dbURL, "FLUSH", flush, "QUOTA", fmt.Sprint(quota)).Replace(durableConfig)
	return writeConfig(t, filepath.Join(dir, "gaia.yaml"), text, up.URL, dir)
}

// inDatabase runs f on a connection of its own to dbURL, within 5 s,
// and fails the test on an error.
func inDatabase(t *testing.T, dbURL string, f func(ctx context.Context, conn *pgx.Conn) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := f(ctx, conn); err != nil {
		t.Fatal(err)
	}
}

// ledgerUsed reads the key's daily usage from the PostgreSQL ledger.
func ledgerUsed(t *testing.T, dbURL string) int64 {
	t.Helper()
	var used int64
	inDatabase(t, dbURL, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT coalesce(sum(used), 0) FROM quota_usage WHERE counter LIKE '%key:k/qdaily'`).Scan(&used)
	})
	return used
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// binary builds gaia-proxy once per test run.
func binary(t *testing.T) string {
	t.Helper()
	binaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gaia-bin-")
		if err != nil {
			binaryErr = err
			return
		}
		binaryPath = filepath.Join(dir, "gaia-proxy")
		out, err := exec.Command("go", "build", "-o", binaryPath, ".").CombinedOutput()
		if err != nil {
			binaryErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// process is gaia-proxy running as a subprocess.
type process struct {
	cmd  *exec.Cmd
	logs *logBuffer
	done chan error
}

// spawn starts the binary and waits until it serves /health on its
// admin port (read from its log).
func spawn(t *testing.T, args ...string) *process { return spawnWith(t, nil, nil, args...) }

// spawnWith is spawn with env added to this process's environment, and
// onLine, when not nil, shown each line of the log as it comes.
func spawnWith(t *testing.T, env []string, onLine func(p *process, line string), args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(binary(t), args...), logs: &logBuffer{}, done: make(chan error, 1)}
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	admin := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.logs.logf("%s", line)
			if onLine != nil {
				onLine(p, line)
			}
			if _, rest, ok := strings.Cut(line, ", admin on "); ok {
				a, _, _ := strings.Cut(rest, ",")
				admin <- a
			}
		}
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() { p.cmd.Process.Kill() })
	select {
	case a := <-admin:
		waitFor(t, 10*time.Second, "health", func() bool {
			resp, err := http.Get("http://" + a + "/health")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil
		}, p.logs)
	case err := <-p.done:
		t.Fatalf("gaia-proxy exited at start: %v\n%s", err, p.logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("gaia-proxy did not start\n%s", p.logs)
	}
	return p
}

// TestCrashKeepsQuotaExact kills gaia-proxy with SIGKILL under load and
// restarts it: the upstream sees exactly the quota, and the ledger holds
// exactly that usage (SPEC §6).
func TestCrashKeepsQuotaExact(t *testing.T) {
	redisURL := testenv.RedisURL(t)
	dbURL := testenv.Schema(t)
	const quota, clients = 300, 4

	// The upstream counts arrivals and can hold requests, so the kill
	// lands while every client's request has reached it: none is caught
	// between its charge and the upstream, where a kill would lose it
	// (charged, never forwarded) and no design could tell.
	var arrived, held atomic.Int64
	var gate sync.RWMutex
	up := &upstream{Server: httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		held.Add(1)
		gate.RLock()
		gate.RUnlock()
		held.Add(-1)
	}))}
	t.Cleanup(up.Close)

	listen := freeAddr(t)
	file := durableFile(t, up, listen, redisURL, dbURL, "100ms", quota)
	p := spawn(t, "serve", "--config", file, "--migrate")

	stop := make(chan struct{})
	var exhausted atomic.Int64
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		hammer([]string{"http://" + listen + "/crash"}, "key-k", clients, stop, func(code int, body string) {
			if code == 429 && strings.Contains(body, "quota_exceeded") {
				exhausted.Add(1)
			}
		})
	}()
	waitFor(t, 30*time.Second, "load before the crash", func() bool { return arrived.Load() >= quota/3 }, p.logs)
	gate.Lock() // hold the requests now arriving
	waitFor(t, 30*time.Second, "every client held at the upstream", func() bool { return held.Load() == clients }, p.logs)
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	gate.Unlock()
	t.Logf("killed after %d admitted requests", arrived.Load())

	p = spawn(t, "serve", "--config", file)
	waitFor(t, 60*time.Second, "the quota exhausted", func() bool { return exhausted.Load() >= 20 }, p.logs)
	close(stop)
	<-loaded

	if got := arrived.Load(); got != quota {
		t.Errorf("the upstream saw %d requests, want exactly the quota %d", got, quota)
	}
	// SIGTERM flushes and exits 0 within 10 s.
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, p.logs)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no exit within 10s of SIGTERM\n%s", p.logs)
	}
	if used := ledgerUsed(t, dbURL); used != quota {
		t.Errorf("the ledger holds %d, want exactly %d", used, quota)
	}
}

// TestReplicasShareLedger: three replicas on one Redis and one
// PostgreSQL ledger, hammered on one quota, flushing every 50 ms. Their
// writes of the shared counter interleave, so the ledger keeps refusing
// values older than one another replica wrote; those must change
// nothing: the upstream sees exactly the quota, the ledger holds exactly
// it after the shutdown, and no replica raises a counter in Redis (which
// is never behind the ledger here).
func TestReplicasShareLedger(t *testing.T) {
	redisURL, dbURL, prefix := testenv.RedisURL(t), testenv.Schema(t), testenv.Prefix(t)
	const quota = 2000
	up := newUpstream(t)
	var replicas []*instance
	for i := range 3 {
		dir := t.TempDir()
		text := strings.NewReplacer("LISTEN", "127.0.0.1:0", "REDISURL", redisURL, "PREFIX", prefix,
			"DBURL", dbURL, "FLUSH", "50ms", "QUOTA", fmt.Sprint(quota)).Replace(durableConfig)
		file := writeConfig(t, filepath.Join(dir, "gaia.yaml"), text, up.URL, dir)
		if i == 0 {
			replicas = append(replicas, startMigrated(t, file))
		} else {
			replicas = append(replicas, start(t, file))
		}
	}
	codes := hammer(routeR(replicas), "key-k", 4, whenSpent(up, "key:k", quota), nil)
	if got := len(up.arrived("key:k")); got != quota {
		t.Errorf("the upstream saw %d requests of a quota of %d shared by three replicas (answers %v)", got, quota, codes)
	}
	for _, in := range replicas {
		in.stop(t)
	}
	if used := ledgerUsed(t, dbURL); used != quota {
		t.Errorf("the ledger holds %d, want exactly %d", used, quota)
	}
	for i, in := range replicas {
		if logs := in.logs.String(); strings.Contains(logs, "behind the ledger") || strings.Contains(logs, "raising them failed") {
			t.Errorf("replica %d raised counters that were never behind:\n%s", i, logs)
		}
	}
}

// TestKilledProcessResynced kills gaia-proxy with SIGKILL before its
// flush, and starts it again: the usage that only Redis held reaches the
// ledger by itself, though the subject sends nothing more (SPEC §6: an
// admitted request reaches the durable ledger).
func TestKilledProcessResynced(t *testing.T) {
	redisURL := testenv.RedisURL(t)
	dbURL := testenv.Schema(t)
	const sent = 25
	up := newUpstream(t)
	listen := freeAddr(t)
	// An hour between flushes: nothing reaches the ledger by a flush.
	file := durableFile(t, up, listen, redisURL, dbURL, "1h", 1000)
	p := spawn(t, "serve", "--config", file, "--migrate")
	// Its own resync at start, which would write what it finds, is over
	// before the requests come.
	waitFor(t, 10*time.Second, "the resync at start", func() bool {
		return strings.Contains(p.logs.String(), "resynced from the hot path at start")
	}, p.logs)
	for i := range sent {
		if resp, body := call(t, "http://"+listen+"/r", "X-API-Key: key-k"); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	if used := ledgerUsed(t, dbURL); used != 0 {
		t.Fatalf("the ledger holds %d before the restart, want 0 (no flush within the hour)", used)
	}

	p = spawn(t, "serve", "--config", file)
	waitFor(t, 30*time.Second, "the killed process's usage in the ledger", func() bool { return ledgerUsed(t, dbURL) == sent }, p.logs)
	waitFor(t, 10*time.Second, "a log line about the resync", func() bool {
		return strings.Contains(p.logs.String(), "resynced from the hot path at start: 1 counters read")
	}, p.logs)

	// Stopped cleanly, after its last flush, the second process takes its
	// heartbeat away; the killed one's stays until a replica claims it.
	conf, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`key_prefix: "([^"]*)"`).FindSubmatch(conf)
	if m == nil {
		t.Fatalf("no key_prefix in the config:\n%s", conf)
	}
	heartbeats := func() int64 {
		return testenv.Redis(t).HLen(context.Background(), string(m[1])+"{replicas}").Val()
	}
	// The killed process's is there too, unless 30 s have passed since
	// its last beat and the running one claimed it.
	before := heartbeats()
	if before < 1 || before > 2 {
		t.Fatalf("%d heartbeats while one process runs, want 1 or 2 (with the killed one's)", before)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-p.done; err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.logs)
	}
	if n := heartbeats(); n != before-1 {
		t.Errorf("%d heartbeats after a clean exit, want %d: its own gone", n, before-1)
	}
}

// TestDeadReplicaResynced: replicas on one Redis and one ledger watch
// each other's heartbeats. One that stops without writing its usage (a
// kill: its Run ends, no Leave) is claimed by another, which resyncs the
// ledger from Redis while running, without a restart. (A clean exit's
// Leave is checked by TestKilledProcessResynced.)
func TestDeadReplicaResynced(t *testing.T) {
	rdb := testenv.Redis(t)
	pool, err := pgxpool.New(context.Background(), testenv.Schema(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := migrations.Apply(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	led := pgstore.New(pool)
	prefix := testenv.Prefix(t)
	rs := redisstore.New(rdb, &redisstore.Options{Prefix: prefix})
	t.Cleanup(func() { rs.Close() })
	start := func(name string) (*logBuffer, context.CancelFunc) {
		logs := &logBuffer{}
		rec := quota.NewRecorder(led, &quota.RecorderOptions{Source: rs, FlushInterval: time.Hour, HeartbeatInterval: 250 * time.Millisecond,
			Logf: func(format string, args ...any) { logs.logf(name+": "+format, args...) }})
		ctx, cancel := context.WithCancel(context.Background())
		stopped := make(chan struct{})
		go func() { rec.Run(ctx); close(stopped) }()
		stop := func() { cancel(); <-stopped }
		t.Cleanup(stop)
		waitFor(t, 10*time.Second, name+" resynced at start", func() bool {
			return strings.Contains(logs.String(), "resynced from the hot path at start")
		}, logs)
		return logs, stop
	}
	logs, _ := start("survivor")
	// A replica charges a counter in Redis and is killed before its
	// flush: its heartbeat stops, and no Leave comes.
	_, kill := start("killed")
	day := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	c := limiter.Counter{Key: "{user:u}user:u/qdaily", Start: day}
	key := fmt.Sprintf("%s%s:p%d", prefix, c.Key, day.Unix())
	if err := rdb.Set(context.Background(), key, counterBytes(7, 7, day.AddDate(0, 0, 1)), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	kill()

	waitFor(t, 10*time.Second, "the dead replica's usage in the ledger", func() bool {
		vs, err := led.Load(context.Background(), []limiter.Counter{c})
		return err == nil && vs[0].Used == 7
	}, logs)
	if !strings.Contains(logs.String(), "other processes stopped without writing all their usage") {
		t.Errorf("the survivor did not say it claimed a dead process:\n%s", logs)
	}
}

// counterBytes is a quota counter as Redis holds it (redisstore's
// store.lua): used, seq and the period's end in ms, little-endian doubles.
func counterBytes(used, seq int64, end time.Time) []byte {
	v := bin.LittleEndian.AppendUint64(nil, math.Float64bits(float64(used)))
	v = bin.LittleEndian.AppendUint64(v, math.Float64bits(float64(seq)))
	return bin.LittleEndian.AppendUint64(v, math.Float64bits(float64(end.UnixMilli())))
}

// BenchmarkResync measures a resync at start: 100,000 quota counters in
// Redis read and written to a PostgreSQL ledger that holds them already
// (as after a restart) or not (as after a kill, the first round).
//
//	go test ./cmd/gaia-proxy -run '^$' -bench Resync -benchtime 3x
func BenchmarkResync(b *testing.B) {
	const counters = 100000
	rdb := testenv.Redis(b)
	prefix := testenv.Prefix(b)
	ctx := context.Background()
	start := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	pipe := rdb.Pipeline()
	for i := range counters {
		id := fmt.Sprint(i)
		used := int64(i%1000 + 1)
		pipe.Set(ctx, fmt.Sprintf("%s{user:u%s}user:u%s/qdaily:p%d", prefix, id, id, start.Unix()), counterBytes(used, used, start.AddDate(0, 0, 1)), time.Hour)
		if pipe.Len() == 1000 {
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Cleanup(func() {
		for it := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator(); it.Next(ctx); {
			rdb.Del(ctx, it.Val())
		}
	})
	pool, err := pgxpool.New(ctx, testenv.Schema(b))
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	if _, err := migrations.Apply(ctx, pool); err != nil {
		b.Fatal(err)
	}
	rs := redisstore.New(rdb, &redisstore.Options{Prefix: prefix})
	defer rs.Close()
	led := pgstore.New(pool)
	for b.Loop() {
		done := make(chan string, 1)
		rec := quota.NewRecorder(led, &quota.RecorderOptions{Source: rs, FlushInterval: time.Hour, Logf: func(format string, args ...any) {
			select {
			case done <- fmt.Sprintf(format, args...):
			default:
			}
		}})
		rctx, cancel := context.WithCancel(ctx)
		stopped := make(chan struct{})
		go func() { rec.Run(rctx); close(stopped) }()
		if line := <-done; !strings.Contains(line, fmt.Sprintf("resynced from the hot path at start: %d counters read", counters)) {
			b.Fatal(line)
		}
		cancel()
		<-stopped
	}
	b.ReportMetric(float64(b.N*counters)/b.Elapsed().Seconds(), "counters/s")
}

// TestRedisLossRehydrates loses Redis's data mid-run, flushed or with
// Redis restarted (connections cut, scripts forgotten too): quota
// counters reload from the ledger, so the quota is not reset, and at
// most one flush interval's usage is lost. Restarted from a snapshot
// taken at half the load before, Redis comes back with older counters
// rather than none: the first write of one that the ledger holds ahead
// raises it to the ledger's usage, so again at most about one flush
// interval's usage is counted twice, not the half since the snapshot.
func TestRedisLossRehydrates(t *testing.T) {
	for _, loss := range []string{"flushed", "restarted", "snapshot"} {
		t.Run(loss, func(t *testing.T) {
			testenv.RedisURL(t) // the same gate as every Redis test
			disk := []string{"--save", "", "--appendonly", "no", "--dir", t.TempDir()}
			addr, rdb, proc := redisServer(t, disk...)
			dbURL := testenv.Schema(t)
			const quota = 300
			const flush = 200 * time.Millisecond
			up := newUpstream(t)
			file := durableFile(t, up, "127.0.0.1:0", "redis://"+addr+"/0", dbURL, flush.String(), quota)
			in := startMigrated(t, file)

			// A paced load: 100 requests a second, so one flush interval
			// holds about 20 admissions.
			const rate = 100
			tick := time.NewTicker(time.Second / rate)
			defer tick.Stop()
			send := func() int {
				<-tick.C
				resp, _ := call(t, in.proxy+"/r", "X-API-Key: key-k")
				return resp.StatusCode
			}
			snapshot := loss == "snapshot"
			for len(up.arrived("key:k")) < quota/2 {
				if s := send(); s != 200 {
					t.Fatalf("before the loss: %d", s)
				}
				if snapshot && len(up.arrived("key:k")) == quota/4 {
					if err := rdb.Save(context.Background()).Err(); err != nil {
						t.Fatal(err)
					}
				}
			}
			switch loss {
			case "flushed":
				if err := rdb.FlushDB(context.Background()).Err(); err != nil {
					t.Fatal(err)
				}
			case "restarted":
				proc.Kill()
				proc.Wait()
				redisServerWith(t, redis.Options{Addr: addr}, disk...)
			default:
				// The ledger has what was admitted since the snapshot.
				time.Sleep(3 * flush)
				proc.Kill()
				proc.Wait()
				_, again, _ := redisServerWith(t, redis.Options{Addr: addr}, disk...)
				if n, err := again.DBSize(context.Background()).Result(); err != nil || n == 0 {
					t.Fatalf("Redis restarted from its snapshot holds %d keys (%v), want the snapshot's", n, err)
				}
			}
			refused := 0
			for refused < 10 {
				switch s := send(); s {
				case 429:
					refused++
				case 200:
				default:
					t.Fatalf("after the loss: %d", s)
				}
			}
			got := len(up.arrived("key:k"))
			lost := got - quota
			perFlush := int(rate * flush / time.Second)
			t.Logf("admitted %d of a quota of %d: %d lost with Redis (one flush interval holds about %d)", got, quota, lost, perFlush)
			if lost < 0 || lost > 2*perFlush {
				t.Errorf("admitted %d for a quota of %d: lost %d, want between 0 and %d (one flush interval, with margin)", got, quota, lost, 2*perFlush)
			}
		})
	}
}

// startMigrated applies the migrations of the config's database, then
// starts serve.
func startMigrated(t *testing.T, file string) *instance {
	t.Helper()
	var out strings.Builder
	if err := run(context.Background(), []string{"migrate", "--config", file}, nil, &out, &out); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	return start(t, file)
}

// postgresRelay puts a relay before the test's PostgreSQL, and returns it
// and dbURL (a URL of that PostgreSQL) going through it.
func postgresRelay(t *testing.T, dbURL string) (*relay.Relay, string) {
	t.Helper()
	addr := strings.SplitN(strings.TrimPrefix(testenv.DatabaseURL(t), "postgres://"), "/", 2)[0]
	if _, host, ok := strings.Cut(addr, "@"); ok {
		addr = host
	}
	rl := relay.New(t, addr)
	return rl, strings.Replace(dbURL, addr, rl.Addr(), 1)
}

// TestInProcessCounterRaised: the in-process limiter on a PostgreSQL
// ledger, restarted while the ledger cannot be read, starts a used-up
// quota from zero (traffic keeps flowing, as documented). Once the
// ledger answers, the first write of the counter finds the ledger ahead
// and the in-process counter is raised to it: the quota holds again, and
// the ledger keeps its usage. Before, the counter went on from zero
// until the day ended, and the ledger never took its values.
func TestInProcessCounterRaised(t *testing.T) {
	file, up, rl, dbURL := inProcessBehindRelay(t, 20, "")
	in := startMigrated(t, file)
	for i := range 20 {
		if resp, body := call(t, in.proxy+"/r", "X-API-Key: key-k"); resp.StatusCode != 200 {
			t.Fatalf("request %d of the quota: %d %s", i, resp.StatusCode, body)
		}
	}
	in.stop(t) // the last flush: the ledger holds 20
	if used := ledgerUsed(t, dbURL); used != 20 {
		t.Fatalf("the ledger holds %d before the restart, want 20", used)
	}

	rl.Cut()
	in = start(t, file)
	for i := range 2 {
		if resp, body := call(t, in.proxy+"/r", "X-API-Key: key-k"); resp.StatusCode != 200 {
			t.Fatalf("request %d with the ledger away: %d %s, want 200 (started from zero)", i, resp.StatusCode, body)
		}
	}
	rl.Restore()
	waitFor(t, 15*time.Second, "the in-process counter raised to the ledger", func() bool {
		return metric(t, in.admin, "gaia_quota_raised_total") >= 1
	}, in.logs)
	for i := range 10 {
		if resp, body := call(t, in.proxy+"/r", "X-API-Key: key-k"); resp.StatusCode != 429 {
			t.Errorf("request %d after the raise: %d %s, want 429 (the quota of 20 was used before the restart)", i, resp.StatusCode, body)
		}
	}
	if got := len(up.arrived("key:k")); got != 22 {
		t.Errorf("the upstream saw %d requests, want 22: the quota, and the 2 admitted while the ledger was away", got)
	}
	in.stop(t)
	if used := ledgerUsed(t, dbURL); used != 20 {
		t.Errorf("the ledger holds %d after the raise, want 20", used)
	}
}

// inProcessBehindRelay writes the config of a server with the in-process
// limiter and a schema of its own in PostgreSQL, reached through a relay
// (flushing every 100 ms, key k with a daily quota of quota), and extra
// in place of the redis line. It returns the config file, the upstream,
// the relay and the schema's URL without the relay.
func inProcessBehindRelay(t *testing.T, quota int, extra string) (string, *upstream, *relay.Relay, string) {
	t.Helper()
	dbURL := testenv.Schema(t)
	rl, relayed := postgresRelay(t, dbURL)
	up := newUpstream(t)
	dir := t.TempDir()
	text := strings.NewReplacer("LISTEN", "127.0.0.1:0", "DBURL", relayed, "FLUSH", "100ms", "QUOTA", fmt.Sprint(quota),
		"redis: {url: \"REDISURL\", key_prefix: \"PREFIX\", timeout: 2s, failure_mode: closed}\n", extra).Replace(durableConfig)
	return writeConfig(t, filepath.Join(dir, "gaia.yaml"), text, up.URL, dir), up, rl, dbURL
}

// durableBehindRelay starts the server on Redis and a schema of its own
// in PostgreSQL, reached through a relay (flushing every 100 ms, key k
// with a quota of a million): the server, its upstream, the relay and
// the schema's URL without the relay.
func durableBehindRelay(t *testing.T) (*instance, *upstream, *relay.Relay, string) {
	t.Helper()
	dbURL := testenv.Schema(t)
	rl, relayed := postgresRelay(t, dbURL)
	up := newUpstream(t)
	in := startMigrated(t, durableFile(t, up, "127.0.0.1:0", testenv.RedisURL(t), relayed, "100ms", 1000000))
	return in, up, rl, dbURL
}

// TestPostgresOutage cuts PostgreSQL away under load: no 5xx, /health
// degraded then ok, and every write lands after it returns.
func TestPostgresOutage(t *testing.T) {
	in, up, rl, dbURL := durableBehindRelay(t)

	stop := make(chan struct{})
	answers := make(chan map[int]int)
	go func() { answers <- hammer([]string{in.proxy + "/r"}, "key-k", 4, stop, nil) }()
	waitFor(t, 10*time.Second, "load", func() bool { return len(up.arrived("key:k")) > 20 }, in.logs)
	rl.Cut()
	waitFor(t, 10*time.Second, "health degraded", func() bool {
		_, body := call(t, in.admin+"/health")
		return strings.Contains(body, `"database":{"status":"degraded"`)
	}, in.logs)
	time.Sleep(3 * time.Second) // several seconds without PostgreSQL, under load
	rl.Restore()
	waitFor(t, 15*time.Second, "health ok", func() bool {
		_, body := call(t, in.admin+"/health")
		return strings.Contains(body, `"database":{"status":"ok"`)
	}, in.logs)
	close(stop)
	for code, n := range <-answers {
		if code != 200 {
			t.Errorf("%d answers with status %d (0: none) during a PostgreSQL outage", n, code)
		}
	}
	admitted := int64(len(up.arrived("key:k")))
	// SPEC §6: queued writes land within 5 s of the database's return.
	waitFor(t, 5*time.Second, "the ledger catching up", func() bool { return ledgerUsed(t, dbURL) == admitted }, in.logs)
	t.Logf("%d admitted; the ledger holds them all", admitted)
}

// TestSIGHUPDuringStart: a SIGHUP while the server is still starting
// (here: waiting for a Redis that does not answer) does not end it, as
// the signal's default would; it reloads once the server runs.
func TestSIGHUPDuringStart(t *testing.T) {
	rl := relay.New(t, redisAddr(t))
	rl.Freeze()
	var hupped atomic.Bool
	p := spawnWith(t, []string{"GAIA_REDIS_URL=redis://" + rl.Addr() + "/0"}, func(p *process, line string) {
		// Printed after the config is read, before Redis is asked.
		if strings.Contains(line, "database.url: not set") {
			hupped.Store(p.cmd.Process.Signal(syscall.SIGHUP) == nil)
		}
	}, "serve", "--upstream", "http://127.0.0.1:1", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data-dir", t.TempDir())
	if !hupped.Load() {
		t.Fatalf("no SIGHUP was sent during the start (the line it waits for did not come first)\n%s", p.logs)
	}
	waitFor(t, 10*time.Second, "the reload the early SIGHUP asked for", func() bool {
		return strings.Contains(p.logs.String(), "reloaded (SIGHUP)")
	}, p.logs)
}
