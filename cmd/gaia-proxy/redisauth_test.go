package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
)

// certs are the files of a test CA, a server certificate it signed for
// 127.0.0.1, and a client certificate it signed, and a TLS config of a
// client that trusts the CA and shows the client certificate.
type certs struct {
	ca, serverCert, serverKey, clientCert, clientKey string
	client                                           *tls.Config
}

// newCerts writes a fresh CA, server and client certificate in a
// directory of the test's.
func newCerts(t *testing.T) *certs {
	t.Helper()
	dir := t.TempDir()
	write := func(name, kind string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := key()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gaia test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	c := &certs{ca: write("ca.pem", "CERTIFICATE", caDER)}
	issue := func(serial int64, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		k := key()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	c.serverCert, c.serverKey = issue(2, "server", x509.ExtKeyUsageServerAuth)
	c.clientCert, c.clientKey = issue(3, "client", x509.ExtKeyUsageClientAuth)
	pair, err := tls.LoadX509KeyPair(c.clientCert, c.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(must(x509.ParseCertificate(caDER)))
	c.client = &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	return c
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// serverArgs are redis-server's TLS arguments: its certificate, and
// client certificates required, signed by the CA.
func (c *certs) serverArgs() []string {
	return []string{"--tls-cert-file", c.serverCert, "--tls-key-file", c.serverKey,
		"--tls-ca-cert-file", c.ca, "--tls-auth-clients", "yes"}
}

// yaml is the redis.tls setting that reaches a server of c.
func (c *certs) yaml(enabled bool) string {
	on := ""
	if enabled {
		on = "enabled: true, "
	}
	return fmt.Sprintf(`tls: {%sca_file: %q, cert_file: %q, key_file: %q}`, on, c.ca, c.clientCert, c.clientKey)
}

// needRedisServer fails the test when redis-server cannot be run; the
// services are required where GAIA_TEST_REDIS_URL is.
func needRedisServer(t *testing.T) {
	t.Helper()
	testenv.RedisURL(t) // the machine runs Redis tests
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server: %v", err)
	}
}

var noDisk = []string{"--save", "", "--appendonly", "no"}

// password is what the tests' Redis servers ask for.
const password = "pw-s3cret"

// secureRedis starts a redis-server of the test's own that takes only
// TLS connections with a client certificate (of fresh certificates c),
// with args (its password among them), and returns c, its address and a
// client of it that uses password.
func secureRedis(t *testing.T, args ...string) (*certs, string, *redis.Client) {
	t.Helper()
	needRedisServer(t)
	c := newCerts(t)
	addr, rdb, _ := redisServerWith(t, redis.Options{TLSConfig: c.client, Password: password},
		append(append(slices.Clone(noDisk), args...), c.serverArgs()...)...)
	return c, addr, rdb
}

// TestRedisTLSPassword runs the server on a Redis that takes only TLS
// connections with a client certificate and asks for a password
// (rediss:// URL, redis.password, redis.tls): it works, and the
// password shows in no log line.
func TestRedisTLSPassword(t *testing.T) {
	c, addr, rdb := secureRedis(t, "--requirepass", password)
	in := servesOn(t, fmt.Sprintf(`url: "rediss://%s/0", password: %q, %s`, addr, password, c.yaml(false)), "redis", rdb)
	in.stop(t)
	// The script was loaded at start: no decision met a NOSCRIPT (which
	// Redis counts as a failed call), so none paid for a connection's
	// set-up either.
	stats := rdb.Info(context.Background(), "commandstats").Val()
	if !strings.Contains(stats, "cmdstat_script|load:calls=") || !regexp.MustCompile(`cmdstat_evalsha:calls=[1-9]\d*,.*failed_calls=0\b`).MatchString(stats) {
		t.Errorf("want the script loaded at start and no failed EVALSHA:\n%s", stats)
	}
	if strings.Contains(in.logs.String(), password) {
		t.Errorf("the log shows the Redis password:\n%s", in.logs)
	}
}

// TestRedisCheckAuthTLS: `gaia-proxy check` fails, naming why, on a
// wrong password, an unknown certificate authority, no client
// certificate, and an unreadable CA file; the password never shows.
func TestRedisCheckAuthTLS(t *testing.T) {
	c, addr, _ := secureRedis(t, "--requirepass", password)
	up := newUpstream(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name, redis, want string
	}{
		{"works", fmt.Sprintf(`url: "rediss://%s/0", password: %q, %s`, addr, password, c.yaml(false)), "ok    redis      reachable"},
		{"wrong password", fmt.Sprintf(`url: "rediss://%s/0", password: "not-s3cret", %s`, addr, c.yaml(false)), "WRONGPASS"},
		{"password in the URL", fmt.Sprintf(`url: "rediss://:%s@%s/0", %s`, password, addr, c.yaml(false)), "ok    redis      reachable"},
		{"no CA", fmt.Sprintf(`url: "rediss://%s/0", password: %q, tls: {cert_file: %q, key_file: %q}`, addr, password, c.clientCert, c.clientKey), "certificate signed by unknown authority"},
		{"no client certificate", fmt.Sprintf(`url: "rediss://%s/0", password: %q, tls: {ca_file: %q}`, addr, password, c.ca), "FAIL  redis"},
		{"missing CA file", fmt.Sprintf(`url: "rediss://%s/0", password: %q, tls: {ca_file: %q}`, addr, password, filepath.Join(dir, "none.pem")), "redis.tls.ca_file: open"},
		{"not TLS", fmt.Sprintf(`url: "redis://%s/0", password: %q`, addr, password), "FAIL  redis"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeConfig(t, filepath.Join(dir, "gaia.yaml"), fmt.Sprintf(`
upstream: {{UPSTREAM}}
data_dir: {{DATA}}
redis: {%s, timeout: 500ms}
`, tc.redis), up.URL, dir)
			var out bytes.Buffer
			err := run(context.Background(), []string{"check", "--config", file}, nil, &out, &out)
			if !strings.Contains(out.String(), tc.want) {
				t.Errorf("check said:\n%s\nwant %q in it", out.String(), tc.want)
			}
			if ok := strings.HasPrefix(tc.want, "ok"); (err == nil) != ok {
				t.Errorf("check returned %v, want success %v", err, ok)
			}
			if strings.Contains(out.String(), password) {
				t.Errorf("check shows the password:\n%s", out.String())
			}
		})
	}
}

// TestRedisClusterTLSPassword runs the server on a Redis Cluster (of one
// node holding every slot) that takes only TLS with client certificates
// and asks for a password: redis.cluster_addrs with redis.tls.enabled.
func TestRedisClusterTLSPassword(t *testing.T) {
	c, addr, node := secureRedis(t, "--requirepass", password, "--masterauth", password,
		"--cluster-enabled", "yes", "--cluster-announce-ip", "127.0.0.1", "--tls-cluster", "yes", "--tls-replication", "yes")
	ctx := context.Background()
	if err := node.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "cluster_state:ok", func() bool {
		info, err := node.ClusterInfo(ctx).Result()
		return err == nil && strings.Contains(info, "cluster_state:ok")
	}, &logBuffer{})
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}, Password: password, TLSConfig: c.client})
	t.Cleanup(func() { cluster.Close() })
	servesOn(t, fmt.Sprintf(`cluster_addrs: [%q], password: %q, %s`, addr, password, c.yaml(true)), "redis-cluster", cluster)
}

// TestUnixSocket runs the server on a Redis of the same host through
// its unix socket (redis.url unix://PATH).
func TestUnixSocket(t *testing.T) {
	needRedisServer(t)
	sock := filepath.Join(t.TempDir(), "redis.sock")
	_, rdb, _ := redisServer(t, append(slices.Clone(noDisk), "--unixsocket", sock, "--unixsocketperm", "700")...)
	servesOn(t, fmt.Sprintf(`url: "unix://%s?db=0"`, sock), "redis", rdb)
}

// TestSentinelPasswords runs the server on a master that asks for a
// password, named by a Sentinel that asks for another:
// redis.sentinel.password is the Sentinel's, redis.password the master's.
func TestSentinelPasswords(t *testing.T) {
	needRedisServer(t)
	const masterPW, sentinelPW = "master-s3cret", "sentinel-s3cret"
	masterAddr, master, _ := redisServerWith(t, redis.Options{Password: masterPW}, append(noDisk, "--requirepass", masterPW)...)
	host, port, _ := net.SplitHostPort(masterAddr)
	conf := filepath.Join(t.TempDir(), "sentinel.conf")
	err := os.WriteFile(conf, []byte(fmt.Sprintf("sentinel monitor authm %s %s 1\n"+
		"sentinel auth-pass authm %s\nrequirepass %s\n", host, port, masterPW, sentinelPW)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	sentinelAddr, _, _ := redisServerWith(t, redis.Options{Password: sentinelPW}, conf, "--sentinel")
	servesOn(t, fmt.Sprintf(`sentinel: {master: authm, addrs: [%q], password: %q}, password: %q`, sentinelAddr, sentinelPW, masterPW),
		"redis-sentinel", master)
}

// TestEvictionWarning: a Redis that may evict keys under memory pressure
// (maxmemory with an eviction policy) could drop the limiter's counters;
// `gaia-proxy check` and the server's start say so, naming the policy;
// with noeviction, or no memory limit, they say nothing.
func TestEvictionWarning(t *testing.T) {
	needRedisServer(t)
	for _, tc := range []struct {
		name string
		args []string
		warn bool
	}{
		{"allkeys-lru", []string{"--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"}, true},
		{"volatile-ttl", []string{"--maxmemory", "64mb", "--maxmemory-policy", "volatile-ttl"}, true},
		{"noeviction", []string{"--maxmemory", "64mb", "--maxmemory-policy", "noeviction"}, false},
		{"no memory limit", []string{"--maxmemory-policy", "allkeys-lru"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _, _ := redisServer(t, append(slices.Clone(noDisk), tc.args...)...)
			up := newUpstream(t)
			dir := t.TempDir()
			file := writeConfig(t, filepath.Join(dir, "gaia.yaml"), fmt.Sprintf(`
upstream: {{UPSTREAM}}
data_dir: {{DATA}}
redis: {url: "redis://%s/0"}
`, addr), up.URL, dir)
			var out bytes.Buffer
			if err := run(context.Background(), []string{"check", "--config", file}, nil, &out, &out); err != nil {
				t.Fatalf("check: %v\n%s", err, out.String())
			}
			in, _, _ := startOnRedis(t, fmt.Sprintf(`url: "redis://%s/0"`, addr))
			in.stop(t)
			for what, text := range map[string]string{"check": out.String(), "the server's log": in.logs.String()} {
				warned := strings.Contains(text, "maxmemory-policy "+tc.args[len(tc.args)-1])
				if warned != tc.warn {
					t.Errorf("%s warns of eviction: %v, want %v:\n%s", what, warned, tc.warn, text)
				}
			}
		})
	}
}

// TestRedisVersion reads INFO's redis_version and tells Redis 6.0 and
// newer (SET KEEPTTL) from older.
func TestRedisVersion(t *testing.T) {
	for _, tc := range []struct {
		info, version string
		recent        bool
	}{
		{"# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n", "7.0.15", true},
		{"# Server\r\nredis_version:6.0.0\r\n", "6.0.0", true},
		{"# Server\r\nredis_version:5.0.7\r\nredis_mode:standalone\r\n", "5.0.7", false},
		{"# Server\r\nredis_version:4.0.14\r\n", "4.0.14", false},
		{"# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\n", "7.2.4", true},
		{"# Server\r\nredis_version:10.1\r\n", "10.1", true},
	} {
		v, ok := redisVersion(tc.info)
		if !ok || v != tc.version || recentRedis(v) != tc.recent {
			t.Errorf("INFO %q: version %q, %v, recent %v; want %q, recent %v", tc.info, v, ok, recentRedis(v), tc.version, tc.recent)
		}
	}
	if _, ok := redisVersion("# Server\r\n"); ok {
		t.Error("a version read from an INFO without one")
	}
}

// TestVersionErrorHere: this machine's Redis and every master of the
// test cluster are recent enough.
func TestVersionErrorHere(t *testing.T) {
	info, err := testenv.Redis(t).Info(t.Context(), "server").Result()
	if v, ok := redisVersion(info); err != nil || !ok || !recentRedis(v) {
		t.Fatalf("this machine's Redis: version %q, %v, %v", v, ok, err)
	}
	for _, rdb := range []redis.UniversalClient{testenv.Redis(t), testenv.RedisCluster(t)} {
		if err := versionError(t.Context(), rdb); err != nil {
			t.Errorf("versionError on this machine's Redis: %v", err)
		}
	}
}

// TestRedisOutOfMemory: a Redis at its memory limit with noeviction
// refuses the script's writes (OOM). That is an outage like any other:
// with failure_mode local every request is answered, from the replica's
// own limiter, /health says redis is degraded and why, and once memory
// is freed the proxy is back on Redis, its counters intact.
func TestRedisOutOfMemory(t *testing.T) {
	needRedisServer(t)
	addr, rdb, _ := redisServer(t, append(slices.Clone(noDisk), "--maxmemory-policy", "noeviction")...)
	in, _, prefix := startOnRedis(t, fmt.Sprintf(`url: "redis://%s/0", timeout: 200ms, failure_mode: local`, addr))
	ctx := context.Background()
	if resp, body := call(t, in.proxy+"/m"); resp.StatusCode != 200 {
		t.Fatalf("before: %d %s", resp.StatusCode, body)
	}
	// 4 MiB of ballast, then a memory limit under it: every write is
	// refused until the limit is lifted.
	ballast := strings.Repeat("x", 64<<10)
	for i := range 64 {
		if err := rdb.Set(ctx, fmt.Sprintf("ballast:%d", i), ballast, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "1mb").Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if resp, body := call(t, in.proxy+"/m"); resp.StatusCode != 200 {
			t.Fatalf("request %d while Redis is out of memory: %d %s", i, resp.StatusCode, body)
		}
	}
	if _, body := call(t, in.admin+"/health"); !strings.Contains(body, `"redis":{"status":"degraded"`) || !strings.Contains(body, "OOM") {
		t.Errorf("health while Redis is out of memory: %s, want redis degraded, saying OOM\n%s", body, in.logs)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "back on Redis", func() bool {
		if resp, body := call(t, in.proxy+"/m"); resp.StatusCode != 200 {
			t.Fatalf("after: %d %s", resp.StatusCode, body)
		}
		_, body := call(t, in.admin+"/health")
		return strings.Contains(body, `"redis":{"status":"ok"`)
	}, in.logs)
	if keys, err := rdb.Keys(ctx, prefix+"*").Result(); err != nil || len(keys) == 0 {
		t.Errorf("the limiter's counters in Redis after it recovered: %v, %v", keys, err)
	}
}

// TestCheckRedisRights: `gaia-proxy check` makes one real decision, so
// a Redis user (ACL) that may connect but not run the limiter's script,
// or not on the keys under the prefix, fails the check, named, instead
// of the first request.
func TestCheckRedisRights(t *testing.T) {
	needRedisServer(t)
	addr, rdb, _ := redisServer(t, noDisk...)
	ctx := context.Background()
	for _, acl := range [][]any{
		{"ACL", "SETUSER", "gaia", "on", ">" + password, "+@all", "~gaia:*"},
		{"ACL", "SETUSER", "noscripts", "on", ">" + password, "+ping", "+hello", "+auth", "+client", "~*"},
		{"ACL", "SETUSER", "otherkeys", "on", ">" + password, "+@all", "~other:*"},
	} {
		if err := rdb.Do(ctx, acl...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	up := newUpstream(t)
	dir := t.TempDir()
	for _, tc := range []struct{ user, want string }{
		{"gaia", "ok    redis      reachable, decides"},
		{"noscripts", "NOPERM"},
		{"otherkeys", "NOPERM"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			file := writeConfig(t, filepath.Join(dir, "gaia.yaml"), fmt.Sprintf(`
upstream: {{UPSTREAM}}
data_dir: {{DATA}}
redis: {url: "redis://%s/0", username: %s, password: %q, timeout: 500ms}
`, addr, tc.user, password), up.URL, dir)
			var out bytes.Buffer
			err := run(ctx, []string{"check", "--config", file}, nil, &out, &out)
			if !strings.Contains(out.String(), tc.want) {
				t.Errorf("check said:\n%s\nwant %q in it", out.String(), tc.want)
			}
			if ok := strings.HasPrefix(tc.want, "ok"); (err == nil) != ok {
				t.Errorf("check returned %v, want success %v", err, ok)
			}
		})
	}
}
