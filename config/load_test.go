package config

import (
	"crypto/sha256"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestGolden loads every testdata/*.yaml and compares the error text with
// its .golden file (empty: the file is valid). GAIA_UPDATE_GOLDEN=1
// rewrites the golden files.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 12 {
		t.Fatalf("found %d golden cases, want at least 12", len(files))
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			_, err := Load(LoadOptions{File: file})
			got := ""
			if err != nil {
				got = err.Error() + "\n"
			}
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if os.Getenv("GAIA_UPDATE_GOLDEN") != "" {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("errors differ\ngot:\n%s\nwant:\n%s", got, want)
			}
			// Passwords in the cases contain "s3cret"; no message may show one.
			if strings.Contains(got, "s3cret") {
				t.Errorf("a message shows a secret:\n%s", got)
			}
		})
	}
}

func TestLoadSpec(t *testing.T) {
	c, err := Load(LoadOptions{File: "testdata/spec.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, ":8080"},
		{"upstream_timeout", c.UpstreamTimeout, 30 * time.Second},
		{"shutdown_timeout (default)", c.ShutdownTimeout, 8 * time.Second},
		{"redis.timeout", c.Redis.Timeout, 50 * time.Millisecond},
		{"redis.hold_refusals (default)", c.Redis.HoldRefusals, time.Second},
		{"trusted_cidrs", c.Identity.TrustedCIDRs, []string{"127.0.0.1/32", "::1/128"}},
		{"plans", len(c.Plans), 3},
		{"pro reputation", *c.Plans["pro"].Reputation, Reputation{Below: 50, Factor: 0.5}},
		{"free rate[1]", c.Plans["free"].Rate[1], Limit{Limit: 300, Window: time.Minute}},
		{"free quota[1]", c.Plans["free"].Quota[1], Limit{Limit: 200000, Period: "monthly"}},
		{"anonymous quota inherits (nil)", c.Plans["anonymous"].Quota == nil, true},
		{"users", c.Users["alice"].Plan, "pro"},
		{"keys[0] rate", c.Keys[0].Rate, []Limit{{Limit: 20, Window: time.Second}}},
		{"keys[0] quota inherits (nil)", c.Keys[0].Quota == nil, true},
		{"routes[0] methods", c.Routes[0].Methods, []string{"POST"}},
		{"routes[1] cost (0 means 1)", c.Routes[1].Cost, int64(1)},
		{"routes[1] scope", c.Routes[1].Rate[0].Scope, "global"},
		{"routes[2] exempt", c.Routes[2].Exempt, true},
		{"alerts[0] notify", c.Alerts[0].Notify, []map[string]string{{"webhook": "http://127.0.0.1:9999/hook"}}},
		{"alerts[0] for", c.Alerts[0].For, time.Minute},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s: got %#v, want %#v", ck.name, ck.got, ck.want)
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("second Validate: %v", err)
	}
}

func TestLoadFileErrors(t *testing.T) {
	_, err := Load(LoadOptions{File: "testdata/does-not-exist.yaml"})
	if err == nil || !strings.Contains(err.Error(), "testdata/does-not-exist.yaml") {
		t.Errorf("missing file: got %v, want an error naming the file", err)
	}
	_, err = Load(LoadOptions{File: "testdata/syntax_error.yaml"})
	if err == nil || !strings.Contains(err.Error(), "testdata/syntax_error.yaml: yaml: line ") {
		t.Errorf("syntax error: got %v, want the file and line", err)
	}
}

// TestPrecedence checks flags > GAIA_ env > DATABASE_URL/PORT > file > defaults.
func TestPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gaia.yaml")
	err := os.WriteFile(file, []byte(`
upstream: http://file:9000
listen: ":1000"
database: {url: "postgres://file/db"}
redis: {url: "redis://file:6379"}
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		noFile   bool
		env      []string
		flags    map[string]any
		get      func(*Config) any
		want     any
		wantErrs []string
	}{
		{name: "file", get: listen, want: ":1000"},
		{name: "default", get: func(c *Config) any { return c.Admin.Listen }, want: "127.0.0.1:9090"},
		{name: "PORT beats file", env: []string{"PORT=2000"}, get: listen, want: ":2000"},
		{name: "GAIA_LISTEN beats PORT", env: []string{"GAIA_LISTEN=:3000", "PORT=2000"}, get: listen, want: ":3000"},
		{name: "flag beats env", env: []string{"GAIA_LISTEN=:3000", "PORT=2000"}, flags: map[string]any{"listen": ":4000"}, get: listen, want: ":4000"},
		{name: "empty env is unset", env: []string{"GAIA_LISTEN=", "PORT="}, get: listen, want: ":1000"},
		{name: "DATABASE_URL beats file", env: []string{"DATABASE_URL=postgres://env/db"}, get: dbURL, want: "postgres://env/db"},
		{name: "GAIA_DATABASE_URL beats DATABASE_URL", env: []string{"GAIA_DATABASE_URL=postgres://gaia/db", "DATABASE_URL=postgres://env/db"}, get: dbURL, want: "postgres://gaia/db"},
		{name: "flag beats GAIA_DATABASE_URL", env: []string{"GAIA_DATABASE_URL=postgres://gaia/db"}, flags: map[string]any{"database.url": "postgres://flag/db"}, get: dbURL, want: "postgres://flag/db"},
		{name: "GAIA_REDIS_URL", env: []string{"GAIA_REDIS_URL=redis://env:6379"}, get: func(c *Config) any { return c.Redis.URL }, want: "redis://env:6379"},
		{name: "GAIA_REDIS_PASSWORD", env: []string{"GAIA_REDIS_PASSWORD=s3cret"}, get: func(c *Config) any { return c.Redis.Password }, want: "s3cret"},
		{name: "GAIA_REDIS_TLS_CA_FILE", env: []string{"GAIA_REDIS_URL=rediss://env:6379", "GAIA_REDIS_TLS_CA_FILE=/etc/ca.pem"}, get: func(c *Config) any { return c.Redis.TLS.CAFile }, want: "/etc/ca.pem"},
		{name: "GAIA_UPSTREAM", env: []string{"GAIA_UPSTREAM=http://env:9000"}, get: func(c *Config) any { return c.Upstream }, want: "http://env:9000"},
		{name: "GAIA_ADMIN_TOKEN", env: []string{"GAIA_ADMIN_TOKEN=s3cret"}, get: func(c *Config) any { return c.Admin.Token }, want: "s3cret"},
		{name: "GAIA_QUOTA_FLUSH_INTERVAL", env: []string{"GAIA_QUOTA_FLUSH_INTERVAL=5s"}, get: func(c *Config) any { return c.Quota.FlushInterval }, want: 5 * time.Second},
		{name: "GAIA_SHADOW", env: []string{"GAIA_SHADOW=true"}, get: func(c *Config) any { return c.Shadow }, want: true},
		{name: "comma list from env", env: []string{"GAIA_IDENTITY_TRUSTED_CIDRS=10.0.0.0/8, 192.168.1.1"}, get: func(c *Config) any { return c.Identity.TrustedCIDRs }, want: []string{"10.0.0.0/8", "192.168.1.1/32"}},
		{name: "typed flag", flags: map[string]any{"upstream_timeout": 5 * time.Second}, get: func(c *Config) any { return c.UpstreamTimeout }, want: 5 * time.Second},
		{name: "flags only", noFile: true, flags: map[string]any{"upstream": "http://flag:9000"}, get: func(c *Config) any { return c.Upstream }, want: "http://flag:9000"},
		{name: "bad env value", env: []string{"GAIA_REDIS_TIMEOUT=fast"}, wantErrs: []string{`redis.timeout: invalid duration "fast" (from GAIA_REDIS_TIMEOUT)`}},
		{name: "bad env value, secret", env: []string{"GAIA_REDIS_TIMEOUT=redis://:s3cret@redis.internal:6379"}, wantErrs: []string{`redis.timeout: invalid duration "redis://xxxxx@redis.internal:6379" (from GAIA_REDIS_TIMEOUT)`}},
		{name: "bad URL, secret in the query", env: []string{"GAIA_REDIS_URL=http://redis.internal:6379/0?password=s3cret"}, wantErrs: []string{`redis.url: must be a redis:// or rediss:// URL with a host, or a unix:// URL with a socket path, got "http://redis.internal:6379/0?xxxxx"`}},
		{name: "unix socket URL", env: []string{"GAIA_REDIS_URL=unix:///run/redis/redis.sock?db=2"}, get: func(c *Config) any { return c.Redis.URL }, want: "unix:///run/redis/redis.sock?db=2"},
		{name: "unix URL without a path", env: []string{"GAIA_REDIS_URL=unix://redis.sock"}, wantErrs: []string{`redis.url: must be a redis:// or rediss:// URL with a host, or a unix:// URL with a socket path, got "unix://redis.sock"`}},
		{name: "bad URL, secret as the user", env: []string{"GAIA_REDIS_URL=http://s3cret@redis.internal:6379"}, wantErrs: []string{`redis.url: must be a redis:// or rediss:// URL with a host, or a unix:// URL with a socket path, got "http://xxxxx@redis.internal:6379"`}},
		{name: "unknown flag key", flags: map[string]any{"lisen": ":1"}, wantErrs: []string{`lisen: unknown key (did you mean "listen"?) (from flags)`}},
		{name: "env is validated", env: []string{"GAIA_ADMIN_LISTEN=0.0.0.0:9090"}, wantErrs: []string{"admin.token: required when admin.listen is not a loopback address"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := LoadOptions{File: file, Env: tc.env, Overrides: tc.flags}
			if tc.noFile {
				o.File = ""
			}
			c, err := Load(o)
			if tc.wantErrs != nil {
				if err == nil {
					t.Fatal("got no error")
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("the error shows a secret: %v", err)
				}
				for _, w := range tc.wantErrs {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("got error %q, want it to contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.get(c); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

func listen(c *Config) any { return c.Listen }
func dbURL(c *Config) any  { return c.Database.URL }

// TestEnvNames documents the GAIA_ variables, derived from Config's tags.
func TestEnvNames(t *testing.T) {
	var got []string
	for _, l := range leafKeys(reflect.TypeFor[Config](), "", nil) {
		got = append(got, envName(l.key))
	}
	want := []string{
		"GAIA_LISTEN", "GAIA_UPSTREAM", "GAIA_UPSTREAM_TIMEOUT", "GAIA_SHUTDOWN_TIMEOUT",
		"GAIA_ADMIN_LISTEN", "GAIA_ADMIN_TOKEN",
		"GAIA_REDIS_URL", "GAIA_REDIS_CLUSTER_ADDRS", "GAIA_REDIS_SENTINEL_MASTER", "GAIA_REDIS_SENTINEL_ADDRS", "GAIA_REDIS_SENTINEL_PASSWORD",
		"GAIA_REDIS_TIMEOUT", "GAIA_REDIS_FAILURE_MODE", "GAIA_REDIS_KEY_PREFIX", "GAIA_REDIS_HOLD_REFUSALS",
		"GAIA_REDIS_USERNAME", "GAIA_REDIS_PASSWORD", "GAIA_REDIS_TLS_ENABLED", "GAIA_REDIS_TLS_CA_FILE",
		"GAIA_REDIS_TLS_CERT_FILE", "GAIA_REDIS_TLS_KEY_FILE", "GAIA_REDIS_TLS_SERVER_NAME", "GAIA_DATABASE_URL", "GAIA_DATA_DIR",
		"GAIA_IDENTITY_API_KEY_HEADERS", "GAIA_IDENTITY_USER_HEADER", "GAIA_IDENTITY_TRUSTED_CIDRS",
		"GAIA_IDENTITY_ANONYMOUS", "GAIA_IDENTITY_STRIP_API_KEY",
		"GAIA_QUOTA_TIMEZONE", "GAIA_QUOTA_FLUSH_INTERVAL", "GAIA_DEFAULTS_PLAN", "GAIA_SHADOW",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestValidateNormalises(t *testing.T) {
	c := defaultConfig()
	c.Upstream = "http://127.0.0.1:9000"
	c.Identity.TrustedCIDRs = []string{"10.1.2.3/8", "192.168.0.1", "::ffff:10.0.0.1", "2001:db8::1"}
	c.Defaults.Plan = "Free"
	c.Plans = map[string]Plan{"free": {}, "anonymous": {}}
	c.Keys = []Key{{ID: "k", Key: "secret", Plan: "FREE", User: "Alice"}}
	c.Routes = []Route{{Name: "r", Path: "/x/*", Methods: []string{"post", "Get"}}}
	for i := range 2 { // twice: normalising is idempotent
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate #%d: %v", i+1, err)
		}
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"trusted_cidrs", c.Identity.TrustedCIDRs, []string{"10.0.0.0/8", "192.168.0.1/32", "10.0.0.1/32", "2001:db8::1/128"}},
		{"defaults.plan", c.Defaults.Plan, "free"},
		{"keys[0].plan", c.Keys[0].Plan, "free"},
		{"keys[0].user", c.Keys[0].User, "alice"},
		{"routes[0].methods", c.Routes[0].Methods, []string{"POST", "GET"}},
		{"routes[0].cost", c.Routes[0].Cost, int64(1)},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s: got %#v, want %#v", ck.name, ck.got, ck.want)
		}
	}
}

func TestAdminLoopback(t *testing.T) {
	tests := []struct {
		listen string
		ok     bool // valid without a token
	}{
		{"127.0.0.1:9090", true},
		{"127.0.0.2:9090", true},
		{"[::1]:9090", true},
		{"localhost:9090", true},
		{":9090", false},
		{"0.0.0.0:9090", false},
		{"[::]:9090", false},
		{"10.0.0.1:9090", false},
		{"admin.internal:9090", false},
	}
	for _, tc := range tests {
		t.Run(tc.listen, func(t *testing.T) {
			c := defaultConfig()
			c.Upstream = "http://127.0.0.1:9000"
			c.Admin.Listen = tc.listen
			err := c.Validate()
			if got := err == nil; got != tc.ok {
				t.Errorf("valid without token: got %v, want %v (%v)", got, tc.ok, err)
			}
			c.Admin.Token = "t0ken"
			if err := c.Validate(); err != nil {
				t.Errorf("with token: %v", err)
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	c, err := Load(LoadOptions{File: "testdata/spec.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	w := c.Warnings()
	if len(w) != 1 || !strings.HasPrefix(w[0], `keys[1].key: API key "ci-bot" is in plain text`) {
		t.Errorf("got %q, want one plain-text key warning", w)
	}
	if strings.Contains(strings.Join(w, "\n"), "plain-text-key") {
		t.Error("a warning prints the key itself")
	}

	c, err = Load(LoadOptions{Overrides: map[string]any{"upstream": "http://x", "shadow": true, "identity.trusted_cidrs": "0.0.0.0/0"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"plans: none configured, so callers without limits of their own are not limited",
		"shadow: true, so violations are recorded and reported but no request is refused",
		"identity.trusted_cidrs[0]: 0.0.0.0/0 lets any peer assert identity.user_header and X-Forwarded-For",
	}
	if got := c.Warnings(); !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}

	// A GAIA_ variable that names no key: a typo, most likely.
	c, err = Load(LoadOptions{Env: []string{"GAIA_REDIS_ULR=redis://127.0.0.1:6379/0", "GAIA_REDIS_TIMEOUT=20ms"}, Overrides: map[string]any{"upstream": "http://x"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Warnings(), "\n"); !strings.Contains(got, `GAIA_REDIS_ULR: names no config key, ignored (did you mean "GAIA_REDIS_URL"?)`) || strings.Contains(got, "GAIA_REDIS_TIMEOUT") {
		t.Errorf("warnings %q, want one for GAIA_REDIS_ULR only", got)
	}

	// Redis without PostgreSQL: limits are shared, the rest is not.
	c, err = Load(LoadOptions{Overrides: map[string]any{"upstream": "http://x", "redis.url": "redis://127.0.0.1:6379/0", "data_dir": t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Warnings(), "\n"); !strings.Contains(got, "database.url: not set, so runtime rules, violations, analytics and the quota ledger stay in this replica's data_dir") {
		t.Errorf("Redis without database.url: warnings %q, want one saying what is not shared", got)
	}

	// PostgreSQL without Redis: limits per replica, quota counts not summed.
	c, err = Load(LoadOptions{Overrides: map[string]any{"upstream": "http://x", "database.url": "postgres://db/gaia"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Warnings(), "\n"); !strings.Contains(got, "redis.url: not set, so this replica enforces limits in its own process") {
		t.Errorf("database.url without Redis: warnings %q, want one saying limits are per replica", got)
	}
}

func TestHashedKey(t *testing.T) {
	c, err := Load(LoadOptions{File: "testdata/spec.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		i    int
		want [32]byte
	}{
		{0, sha256.Sum256([]byte("test"))},           // given as hash
		{1, sha256.Sum256([]byte("plain-text-key"))}, // given as key
	}
	for _, tc := range tests {
		if got, err := c.HashedKey(tc.i); err != nil || got != tc.want {
			t.Errorf("HashedKey(%d) = %x, %v; want %x", tc.i, got, err, tc.want)
		}
	}
	if _, err := c.HashedKey(2); err == nil {
		t.Error("HashedKey(2): got no error for a missing key")
	}
	if got, want := HashKey("test"), c.Keys[0].Hash; got != want {
		t.Errorf("HashKey(test) = %s, want %s", got, want)
	}
}

func TestRestartRequired(t *testing.T) {
	load := func() *Config {
		c, err := Load(LoadOptions{File: "testdata/spec.yaml"})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   []string
	}{
		{"nothing", func(*Config) {}, nil},
		{"policy", func(c *Config) {
			c.Plans["free"] = Plan{}
			c.Keys = c.Keys[:1]
			c.Routes = nil
			c.Alerts = nil
			c.Shadow = true
			c.Defaults.Plan = "pro"
			c.Identity.TrustedCIDRs = []string{"10.0.0.0/8"}
		}, nil},
		{"empty list is no list", func(c *Config) { c.Redis.ClusterAddrs = []string{} }, nil},
		{"wiring", func(c *Config) {
			c.Listen = ":1"
			c.Admin.Token = "new"
			c.Redis.URL = "redis://other:6379"
			c.Database.URL = "postgres://other/db"
			c.DataDir = "/var/lib/gaia"
			c.Quota.FlushInterval = 5 * time.Second
			c.Quota.Timezone = "Europe/Berlin"
		}, []string{"listen", "admin.token", "redis.url", "database.url", "data_dir", "quota.timezone", "quota.flush_interval"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prev, next := load(), load()
			tc.change(next)
			if got := RestartRequired(prev, next); !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"listen", "trusted_cidrs", "window", "id"}
	tests := []struct{ in, want string }{
		{"trusted_cidr", ` (did you mean "trusted_cidrs"?)`},
		{"lisen", ` (did you mean "listen"?)`},
		{"windw", ` (did you mean "window"?)`},
		{"something", ""},
		{"ix", ` (did you mean "id"?)`},
		{"x", ""},
	}
	for _, tc := range tests {
		if got := suggest(tc.in, known); got != tc.want {
			t.Errorf("suggest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLoadEmptyEntries(t *testing.T) {
	c, err := Load(LoadOptions{File: "testdata/empty_entries.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := slices.Sorted(maps.Keys(c.Plans)), []string{"anonymous", "unlimited"}; !slices.Equal(got, want) {
		t.Errorf("plans: got %q, want %q", got, want)
	}
	if got, want := slices.Sorted(maps.Keys(c.Users)), []string{"alice@example.com", "bob.smith"}; !slices.Equal(got, want) {
		t.Errorf("users: got %q, want %q", got, want)
	}
	if c.Defaults.Plan != "unlimited" {
		t.Errorf("defaults.plan: got %q, want %q", c.Defaults.Plan, "unlimited")
	}
}

func TestLoadEmptySections(t *testing.T) {
	c, err := Load(LoadOptions{File: "testdata/empty_sections.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	def := defaultConfig()
	checks := []struct {
		name      string
		got, want any
	}{
		{"admin", c.Admin, def.Admin},
		{"redis", c.Redis, def.Redis},
		{"quota", c.Quota, def.Quota},
		{"identity.user_header", c.Identity.UserHeader, def.Identity.UserHeader},
		{"plans.anonymous.reputation", c.Plans["anonymous"].Reputation, (*Reputation)(nil)},
		{"plans.free", c.Plans["free"], Plan{}},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s: got %#v, want %#v", ck.name, ck.got, ck.want)
		}
	}
}
