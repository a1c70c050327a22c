package main

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gaia-proxy/gaia-proxy/internal/relay"
	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
)

const redisConfig = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
upstream_timeout: 5s
admin: {listen: 127.0.0.1:0}
data_dir: {{DATA}}
redis: {url: "REDISURL", key_prefix: "PREFIX", timeout: TIMEOUT, failure_mode: MODE}
quota: {timezone: {{ZONE}}, flush_interval: 100ms}
defaults: {plan: free}
plans:
  anonymous: {rate: [{limit: 1000, window: 1s}]}
  free: {rate: [{limit: 60, window: 2s}]}
  metered:
    rate: [{limit: 100000, window: 1s}]
    quota: [{limit: 150, period: daily}]
  small: {rate: [{limit: 5, window: 1h}]}
keys:
  - {id: rated, key: key-rated}
  - {id: metered, key: key-metered, plan: metered}
  - {id: small, key: key-small, plan: small}
`

// startReplicas starts n instances sharing one Redis (through redisAddr)
// and one key prefix, each with its own data directory.
func startReplicas(t *testing.T, n int, up *upstream, redisAddr, mode, timeout string) []*instance {
	t.Helper()
	prefix := testenv.Prefix(t)
	var out []*instance
	for i := 0; i < n; i++ {
		dir := t.TempDir()
		text := strings.NewReplacer("REDISURL", "redis://"+redisAddr+"/0", "PREFIX", prefix, "MODE", mode, "TIMEOUT", timeout).Replace(redisConfig)
		out = append(out, start(t, writeConfig(t, filepath.Join(dir, "gaia.yaml"), text, up.URL, dir)))
	}
	return out
}

func redisAddr(t *testing.T) string {
	u := testenv.RedisURL(t)
	return strings.TrimSuffix(strings.TrimPrefix(u, "redis://"), "/0")
}

// hammer sends GET requests with API key to each of urls from per
// goroutines each until stop, and counts answers by status (0: no answer,
// after which the goroutine backs off a little: a proxy restarting).
// answer, when not nil, sees each status and body as it comes.
func hammer(urls []string, key string, per int, stop <-chan struct{}, answer func(code int, body string)) map[int]int {
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	for _, url := range urls {
		for range per {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					req, _ := http.NewRequest("GET", url, nil)
					req.Header.Set("X-API-Key", key)
					code, body := 0, ""
					if resp, err := client.Do(req); err == nil {
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						code, body = resp.StatusCode, string(b)
					} else {
						time.Sleep(5 * time.Millisecond)
					}
					if answer != nil {
						answer(code, body)
					}
					mu.Lock()
					codes[code]++
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	return codes
}

// routeR is the /r URL of every replica's proxy.
func routeR(replicas []*instance) []string {
	urls := make([]string, len(replicas))
	for i, in := range replicas {
		urls[i] = in.proxy + "/r"
	}
	return urls
}

// whenSpent returns a channel closed once the upstream has seen n
// requests of subject and a little more time has passed (for every
// replica to be refused too), or after a minute whatever it saw, so that
// a test short of its quota fails on its count rather than hanging.
func whenSpent(up *upstream, subject string, n int) <-chan struct{} {
	stop := make(chan struct{})
	go func() {
		defer close(stop)
		deadline := time.Now().Add(time.Minute)
		for len(up.arrived(subject)) < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
	}()
	return stop
}

// maxInWindow returns the most arrivals in any closed interval of length w.
func maxInWindow(ts []time.Time, w time.Duration) int {
	most, j := 0, 0
	for i := range ts {
		for ts[i].Sub(ts[j]) > w {
			j++
		}
		most = max(most, i-j+1)
	}
	return most
}

// TestReplicasShareRedis: three proxies on one Redis, hammered at once,
// admit no more than the limit in any window, as the upstream saw it,
// and at least 95% of it; and exactly the quota, together.
func TestReplicasShareRedis(t *testing.T) {
	up := newUpstream(t)
	// A generous Redis timeout: this test is about Redis deciding, and a
	// busy machine (or -race) must not push decisions to the fallback.
	replicas := startReplicas(t, 3, up, redisAddr(t), "closed", "2s")

	const limit, window, run = 60, 2 * time.Second, 6 * time.Second
	stop := make(chan struct{})
	time.AfterFunc(run, func() { close(stop) })
	began := time.Now()
	codes := hammer(routeR(replicas), "key-rated", 4, stop, nil)
	took := time.Since(began)
	arrivals := up.arrived("key:rated")
	t.Logf("answers %v, %d admitted in %v", codes, len(arrivals), took)
	if codes[0] > 0 || codes[500]+codes[502]+codes[503] > 0 {
		t.Fatalf("errors under load: %v", codes)
	}
	// The upstream's clock sees requests a little after they were decided,
	// and unevenly on a busy machine: judge windows shortened by a margin
	// for that jitter. A fixed-window double burst, or any leak between
	// replicas, still shows.
	const jitter = 150 * time.Millisecond
	if most := maxInWindow(arrivals, window-jitter); most > limit {
		t.Errorf("%d requests reached the upstream within %v: the limit is %d per %v", most, window-jitter, limit, window)
	}
	// Saturated for `run`: every full window must have been used.
	if want := int(0.95 * limit * float64(run/window)); len(arrivals) < want {
		t.Errorf("admitted %d in %v, want at least %d (95%% of %d per %v)", len(arrivals), run, want, limit, window)
	}

	codes = hammer(routeR(replicas), "key-metered", 4, whenSpent(up, "key:metered", 150), nil)
	if got := len(up.arrived("key:metered")); got != 150 {
		t.Errorf("the upstream saw %d requests of a quota of 150 shared by three replicas (answers %v)", got, codes)
	}
	for i, in := range replicas {
		if strings.Contains(in.logs.String(), "redis unavailable") {
			t.Errorf("replica %d lost Redis during the test:\n%s", i, in.logs)
		}
		// /metrics shows how decisions shared round trips.
		decisions, trips := metric(t, in.admin, "gaia_redis_decisions_total"), metric(t, in.admin, "gaia_redis_round_trips_total")
		if trips <= 0 || decisions < trips {
			t.Errorf("replica %d: %v decisions in %v round trips", i, decisions, trips)
		}
		// Callers kept knocking after their 429s: most of those were
		// refused again without Redis (redis.hold_refusals, 1s).
		if held := metric(t, in.admin, "gaia_refusals_held_total"); held < decisions {
			t.Errorf("replica %d: %v refusals held, %v decisions by Redis; want more held", i, held, decisions)
		}
	}
}

// metric reads the value of an unlabelled series from the /metrics of
// the admin port at admin.
func metric(t *testing.T, admin, name string) float64 {
	t.Helper()
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

// TestSkewedClocks runs three replicas whose clocks disagree by seconds
// across an hour boundary: one believes the next hour is 2 s away, one
// that it began 2 s ago. Windows and quota periods go by the Redis clock,
// so they still share one sliding window and one hourly quota exactly.
func TestSkewedClocks(t *testing.T) {
	up := newUpstream(t)
	prefix := testenv.Prefix(t)
	now := time.Now()
	boundary := now.Truncate(time.Hour).Add(time.Hour)
	var replicas []*instance
	for _, skew := range []time.Duration{boundary.Sub(now) - 2*time.Second, 0, boundary.Sub(now) + 2*time.Second} {
		dir := t.TempDir()
		text := strings.NewReplacer("REDISURL", "redis://"+redisAddr(t)+"/0", "PREFIX", prefix, "MODE", "closed", "TIMEOUT", "2s").Replace(redisConfig)
		text = strings.Replace(text, "period: daily", "period: hourly", 1)
		file := writeConfig(t, filepath.Join(dir, "gaia.yaml"), text, up.URL, dir)
		replicas = append(replicas, startWith(t, serveOptions{
			LoadOptions: loadFile(file),
			Clock:       func() time.Time { return time.Now().Add(skew) },
		}))
	}

	const limit, window, run = 60, 2 * time.Second, 4 * time.Second
	stop := make(chan struct{})
	time.AfterFunc(run, func() { close(stop) })
	hammer(routeR(replicas), "key-rated", 3, stop, nil)
	arrivals := up.arrived("key:rated")
	const jitter = 150 * time.Millisecond
	if most := maxInWindow(arrivals, window-jitter); most > limit {
		t.Errorf("%d requests within %v with clocks apart: the limit is %d per %v", most, window-jitter, limit, window)
	}
	if want := int(0.95 * limit * float64(run/window)); len(arrivals) < want {
		t.Errorf("admitted %d in %v, want at least %d", len(arrivals), run, want)
	}

	hammer(routeR(replicas), "key-metered", 3, whenSpent(up, "key:metered", 150), nil)
	if got := len(up.arrived("key:metered")); got != 150 {
		t.Errorf("the upstream saw %d requests of an hourly quota of 150 shared by replicas whose clocks straddle the hour", got)
	}
}

// TestRedisOutage cuts Redis away from a proxy and brings it back, in
// each failure mode.
func TestRedisOutage(t *testing.T) {
	addr := redisAddr(t)
	for _, tc := range []struct {
		mode   string
		status int    // answers while Redis is away
		health string // /health status while away
		// of 8 requests of a 5-per-hour key during each outage; in local
		// mode the second, seconds after the first, shares its
		// fallback, which has already admitted the 5
		admitted [2]int
	}{
		{"local", 200, "degraded", [2]int{5, 0}},
		{"open", 200, "degraded", [2]int{8, 8}},
		{"closed", 503, "down", [2]int{0, 0}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			up := newUpstream(t)
			rl := relay.New(t, addr)
			in := startReplicas(t, 1, up, rl.Addr(), tc.mode, "50ms")[0]
			if resp, _ := call(t, in.proxy+"/r", "X-API-Key: key-small"); resp.StatusCode != 200 {
				t.Fatalf("before the outage: %d", resp.StatusCode)
			}
			for o, outage := range []struct {
				name string
				do   func()
			}{{"refused", rl.Cut}, {"hung", rl.Freeze}} {
				outage.do()
				admitted := 0
				for i := 0; i < 8; i++ {
					began := time.Now()
					resp, body := call(t, in.proxy+"/r", "X-API-Key: key-small")
					// The decision gives up after redis.timeout (50ms); a
					// generous margin covers a busy machine.
					if took := time.Since(began); took > time.Second {
						t.Errorf("%s redis: request %d took %v", outage.name, i, took)
					}
					switch {
					case resp.StatusCode == 200:
						admitted++
					case resp.StatusCode == 429 && tc.mode == "local":
					case resp.StatusCode != tc.status:
						t.Errorf("%s redis: request %d: %d %s, want %d", outage.name, i, resp.StatusCode, body, tc.status)
					}
					if tc.mode == "closed" && !strings.Contains(body, `"limiter_unavailable"`) {
						t.Errorf("closed: body %s", body)
					}
				}
				if admitted != tc.admitted[o] {
					t.Errorf("%s redis: admitted %d of 8 during the outage, want %d", outage.name, admitted, tc.admitted[o])
				}
				resp, body := call(t, in.admin+"/health")
				if !strings.Contains(body, fmt.Sprintf(`"status":%q`, tc.health)) || (tc.health == "down") != (resp.StatusCode == 503) {
					t.Errorf("%s redis: health %d %s, want %s", outage.name, resp.StatusCode, body, tc.health)
				}
				rl.Restore()
				backOnRedis(t, in)
				call(t, in.proxy+"/r", "X-API-Key: key-small") // on Redis
			}
			// Back on Redis, the key's usage before the outages still
			// counts: the request before them, and the request on Redis
			// after each, so with this one at least 4 of 5 are used. Had
			// Redis forgotten the usage before the last outage, at most 2
			// would be.
			resp, _ := call(t, in.proxy+"/r", "X-API-Key: key-small")
			if rem := resp.Header.Get("X-Ratelimit-Remaining"); resp.StatusCode == 200 && rem != "0" && rem != "1" {
				t.Errorf("after the outages, %s of 5 remain: Redis forgot the usage before them", rem)
			}
			if !strings.Contains(in.logs.String(), "redis unavailable") || !strings.Contains(in.logs.String(), "redis is back") {
				t.Errorf("transitions not logged:\n%s", in.logs)
			}
		})
	}
}

// backOnRedis waits until in is back on Redis after an outage: /health
// says so. Requests of key-small go through meanwhile, as the breaker's
// probes go through requests.
func backOnRedis(t *testing.T, in *instance) {
	t.Helper()
	waitFor(t, 10*time.Second, "back on Redis", func() bool {
		call(t, in.proxy+"/r", "X-API-Key: key-small")
		_, body := call(t, in.admin+"/health")
		return strings.Contains(body, `"redis":{"status":"ok"`)
	}, in.logs)
}

// TestLocalQuotaUsageCarriedBack: quota usage decided by the in-process
// fallback while Redis was away (failure_mode local) reaches the ledger,
// and when Redis returns its counter, behind the ledger, is raised to
// it: the quota holds across the outage, short of about one flush
// interval's use on Redis before the raise. Before, Redis went on from
// its own count and the usage decided locally was admitted again.
func TestLocalQuotaUsageCarriedBack(t *testing.T) {
	up := newUpstream(t)
	rl := relay.New(t, redisAddr(t))
	in := startReplicas(t, 1, up, rl.Addr(), "local", "50ms")[0]
	// Plan metered: 150 a day. Requests at 100 a second: 10 per flush
	// interval (100ms).
	const quota, onRedis, local = 150, 10, 40
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	send := func() int {
		<-tick.C
		resp, _ := call(t, in.proxy+"/r", "X-API-Key: key-metered")
		return resp.StatusCode
	}
	for i := range onRedis {
		if s := send(); s != 200 {
			t.Fatalf("request %d on Redis: %d", i, s)
		}
	}
	time.Sleep(300 * time.Millisecond) // flushed: the fallback starts from the ledger
	rl.Cut()
	for i := range local {
		if s := send(); s != 200 {
			t.Fatalf("request %d while Redis is away: %d", i, s)
		}
	}
	if !strings.Contains(in.logs.String(), "redis unavailable") {
		t.Fatalf("the requests were not decided locally:\n%s", in.logs)
	}
	rl.Restore()
	backOnRedis(t, in)
	for refused := 0; refused < 5; {
		switch s := send(); s {
		case 429:
			refused++
		case 200:
		default:
			t.Fatalf("back on Redis: %d", s)
		}
	}
	got := len(up.arrived("key:metered"))
	t.Logf("admitted %d of a quota of %d, %d of them decided locally", got, quota, local)
	// Raised at the first flush after the return: about 10 requests
	// admitted on Redis before it; 30 is the margin for a busy machine.
	// Without the raise, Redis admits its 140 left: 190 in all.
	if got < quota || got > quota+30 {
		t.Errorf("admitted %d for a quota of %d across a local outage, want %d to %d", got, quota, quota, quota+30)
	}
	if !strings.Contains(in.logs.String(), "behind the ledger") {
		t.Errorf("the raise was not logged:\n%s", in.logs)
	}
	if n := metric(t, in.admin, "gaia_quota_raised_total"); n < 1 {
		t.Errorf("gaia_quota_raised_total = %v, want the raise counted", n)
	}
}

// TestHealthFollowsRedis: /health looks at Redis itself, with no
// request going through. With failure_mode closed a readiness probe
// takes a replica without Redis out of service, so no traffic would
// find Redis back: /health must see Redis go, and come back.
func TestHealthFollowsRedis(t *testing.T) {
	up := newUpstream(t)
	rl := relay.New(t, redisAddr(t))
	// 200ms for Redis rather than 50: the test is about who looks, and a
	// probe timed out on a busy machine (-race, every package at once)
	// only delays the return by the breaker's backoff.
	in := startReplicas(t, 1, up, rl.Addr(), "closed", "200ms")[0]
	health := func(status int, state string) func() bool {
		return func() bool {
			resp, body := call(t, in.admin+"/health")
			return resp.StatusCode == status && strings.Contains(body, `"redis":{"status":"`+state+`"`)
		}
	}
	waitFor(t, 10*time.Second, "/health ok on Redis", health(200, "ok"), in.logs)
	rl.Cut()
	waitFor(t, 10*time.Second, "/health down with Redis cut and no requests", health(503, "down"), in.logs)
	// Failed looks count against the breaker as failed decisions do:
	// it opens (three, a second or more apart).
	waitFor(t, 20*time.Second, "the breaker open with no requests", func() bool {
		return health(503, "down")() && strings.Contains(in.logs.String(), "redis unavailable")
	}, in.logs)
	rl.Restore()
	waitFor(t, 20*time.Second, "/health ok with Redis back and no requests", health(200, "ok"), in.logs)
	if resp, body := call(t, in.proxy+"/r", "X-API-Key: key-small"); resp.StatusCode != 200 {
		t.Errorf("first request after /health found Redis back: %d %s, want 200", resp.StatusCode, body)
	}
	if !strings.Contains(in.logs.String(), "redis is back") {
		t.Errorf("the return to Redis is not logged:\n%s", in.logs)
	}
}

// waitFor polls f until it holds or wait passes.
func waitFor(t *testing.T, wait time.Duration, what string, f func() bool, logs *logBuffer) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; log:\n%s", what, wait, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSentinel runs the server on the Redis that a Sentinel names
// (redis.sentinel): /health says so, limits hold, and the counters are
// in that Redis.
func TestSentinel(t *testing.T) {
	master, addrs := testenv.RedisSentinel(t)
	servesOn(t, fmt.Sprintf(`sentinel: {master: %s, addrs: [%q]}`, master, strings.Join(addrs, `", "`)),
		"redis-sentinel", testenv.RedisFailover(t))
}

// startOnRedis starts the server of redisConfig with the redis settings
// (YAML mapping entries, without braces) and a key prefix of the
// test's own, in front of an upstream of its own. It returns the
// server, the upstream and the prefix.
func startOnRedis(t *testing.T, settings string) (*instance, *upstream, string) {
	t.Helper()
	prefix := testenv.Prefix(t)
	up := newUpstream(t)
	dir := t.TempDir()
	text := strings.NewReplacer(
		`redis: {url: "REDISURL", key_prefix: "PREFIX", timeout: TIMEOUT, failure_mode: MODE}`,
		fmt.Sprintf(`redis: {%s, key_prefix: %q}`, settings, prefix),
	).Replace(redisConfig)
	return start(t, writeConfig(t, filepath.Join(dir, "gaia.yaml"), text, up.URL, dir)), up, prefix
}

// servesOn starts the server with the redis settings (YAML
// mapping entries, without braces; the key prefix and failure_mode
// closed are added) and shows that it works on the Redis that rdb
// reaches: /health reports it ok in mode, plan small's 5 an hour holds,
// and the counters are in that Redis. It returns the server. Redis gets
// 2 s per decision, not the default 50 ms: what is shown here is that
// the mode works, and under -race, with every test package running at
// once, a first decision over TLS on a cluster once took longer than
// 50 ms (503 with closed). The fault tests show the timeout.
func servesOn(t *testing.T, settings, mode string, rdb redis.Cmdable) *instance {
	t.Helper()
	in, up, prefix := startOnRedis(t, settings+", failure_mode: closed, timeout: 2s")

	_, body := call(t, in.admin+"/health")
	if want := fmt.Sprintf(`"redis":{"status":"ok","mode":%q}`, mode); !strings.Contains(body, want) {
		t.Errorf("health: %s, want %s", body, want)
	}
	for i := 1; i <= 6; i++ { // plan small: 5 an hour
		resp, body := call(t, in.proxy+"/s", "X-API-Key: key-small")
		if want := map[bool]int{true: 200, false: 429}[i <= 5]; resp.StatusCode != want {
			t.Errorf("request %d: %d %s, want %d", i, resp.StatusCode, body, want)
		}
	}
	if n, _ := up.seen("/s"); n != 5 {
		t.Errorf("upstream saw %d requests, want 5", n)
	}
	keys, err := rdb.Keys(t.Context(), prefix+"*").Result()
	if err != nil || len(keys) == 0 {
		t.Errorf("keys under %q in %s's Redis: %v, %v; want the limiter's counters", prefix, mode, keys, err)
	}
	return in
}

// TestRedisLog: go-redis's lines reach the log named as its, and kept
// quiet per format (internal/logquiet tests the quiet).
func TestRedisLog(t *testing.T) {
	var lines []string
	l := newRedisLog(func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) })
	dial := "redis: connection pool: failed to dial after %d attempts: %v"
	for range 3 {
		l.Printf(t.Context(), dial, 5, "connection refused")
	}
	l.Printf(t.Context(), "sentinel: new master=%q", "gaia")
	want := []string{
		"redis client: redis: connection pool: failed to dial after 5 attempts: connection refused",
		`redis client: sentinel: new master="gaia"`,
	}
	if !slices.Equal(lines, want) {
		t.Errorf("got lines\n%q\nwant\n%q", lines, want)
	}
}
