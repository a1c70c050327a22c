// Package config reads gaia-proxy's YAML, environment and flags into a
// Config, validates all of it at once, and watches the file for edits.
// It is the only package that imports viper.
package config

import "time"

// Config is the whole configuration file. Field tags are the YAML keys;
// every key outside plans, users, keys, routes and alerts can be
// overridden by GAIA_<SECTION>_<KEY> in the environment (see Load).
type Config struct {
	// Listen is the proxy's host:port.
	Listen string `mapstructure:"listen"`
	// Upstream is the absolute http(s) URL of the protected service.
	Upstream string `mapstructure:"upstream"`
	// UpstreamTimeout bounds one upstream round trip.
	UpstreamTimeout time.Duration `mapstructure:"upstream_timeout"`
	// ShutdownTimeout bounds draining in-flight requests on SIGTERM.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// Admin is the admin listener.
	Admin Admin `mapstructure:"admin"`
	// Redis is the shared hot-path store; empty means in-process.
	Redis Redis `mapstructure:"redis"`
	// Database is the durable ledger; empty means the embedded store.
	Database Database `mapstructure:"database"`
	// DataDir holds the embedded store.
	DataDir string `mapstructure:"data_dir"`
	// Identity says how callers are recognised.
	Identity Identity `mapstructure:"identity"`
	// Quota holds calendar and ledger settings.
	Quota Quota `mapstructure:"quota"`
	// Defaults holds defaults for callers.
	Defaults Defaults `mapstructure:"defaults"`
	// Shadow makes every limit a shadow limit: report, never refuse.
	Shadow bool `mapstructure:"shadow"`
	// Plans maps plan names to plans. Load lower-cases the names.
	Plans map[string]Plan `mapstructure:"plans"`
	// Users maps user ids to users. Load lower-cases the ids, so user ids
	// are case-insensitive: compare them lower-cased.
	Users map[string]User `mapstructure:"users"`
	// Keys are the known API keys.
	Keys []Key `mapstructure:"keys"`
	// Routes give paths costs, extra limits or exemptions.
	Routes []Route `mapstructure:"routes"`
	// Alerts are alert rules.
	Alerts []Alert `mapstructure:"alerts"`

	// ignoredEnv are Warnings about GAIA_ variables that name no key.
	ignoredEnv []string
}

// Admin is the admin listener.
type Admin struct {
	// Listen is the admin port's host:port.
	Listen string `mapstructure:"listen"`
	// Token is required when Listen is not a loopback address.
	Token string `mapstructure:"token"`
}

// Redis selects the hot-path store. All empty means in-process.
type Redis struct {
	// URL is a redis:// or rediss:// URL for a single server.
	URL string `mapstructure:"url"`
	// ClusterAddrs are Redis Cluster seed addresses, instead of URL.
	ClusterAddrs []string `mapstructure:"cluster_addrs"`
	// Sentinel is a Sentinel setup, instead of URL.
	Sentinel Sentinel `mapstructure:"sentinel"`
	// Timeout bounds one decision; past it FailureMode applies.
	Timeout time.Duration `mapstructure:"timeout"`
	// FailureMode is "local", "open" or "closed".
	FailureMode string `mapstructure:"failure_mode"`
	// KeyPrefix starts every key gaia-proxy writes, so deployments can
	// share a Redis. Replicas that share limits must share it.
	KeyPrefix string `mapstructure:"key_prefix"`
	// HoldRefusals is how long a replica may refuse again by itself a
	// request Redis refused, while the refusing limit is still full.
	// Zero sends every request to Redis.
	HoldRefusals time.Duration `mapstructure:"hold_refusals"`
	// Username and Password authenticate to Redis (AUTH; a username
	// is a Redis 6 ACL user). A URL may carry them instead, not both.
	Username string `mapstructure:"username"`
	Password string `mapstructure:"password"`
	// TLS secures the connections to Redis.
	TLS TLS `mapstructure:"tls"`
}

// TLS says how to reach Redis over TLS.
type TLS struct {
	// Enabled turns TLS on for cluster_addrs and sentinel; a URL turns
	// it on with the rediss:// scheme.
	Enabled bool `mapstructure:"enabled"`
	// CAFile holds the PEM certificates that may sign Redis's; empty
	// means the system's roots.
	CAFile string `mapstructure:"ca_file"`
	// CertFile and KeyFile are a client certificate and its key, for a
	// Redis that asks for one (tls-auth-clients).
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
	// ServerName is the name Redis's certificate must carry, when it is
	// not the host Redis is reached at.
	ServerName string `mapstructure:"server_name"`
}

// Sentinel is a Redis Sentinel setup.
type Sentinel struct {
	// Master is the monitored master's name.
	Master string `mapstructure:"master"`
	// Addrs are the sentinels' host:port addresses.
	Addrs []string `mapstructure:"addrs"`
	// Password is the Sentinels' own (their requirepass), when they
	// ask for one; Redis.Password is the master's.
	Password string `mapstructure:"password"`
}

// Database selects the durable ledger. Empty URL means the embedded store.
type Database struct {
	// URL is a PostgreSQL URL or key=value DSN.
	URL string `mapstructure:"url"`
}

// Identity says how callers are recognised.
type Identity struct {
	// APIKeyHeaders are read in order; the first with a value holds the
	// key. Authorization is read as "Bearer <key>".
	APIKeyHeaders []string `mapstructure:"api_key_headers"`
	// UserHeader names the user when a trusted peer sends it. Empty means
	// no user header.
	UserHeader string `mapstructure:"user_header"`
	// TrustedCIDRs are the peers allowed to assert UserHeader and
	// X-Forwarded-For. A bare IP address means that one address;
	// Validate rewrites entries to canonical prefixes ("10.0.0.1/32").
	TrustedCIDRs []string `mapstructure:"trusted_cidrs"`
	// Anonymous is "ip" or "reject".
	Anonymous string `mapstructure:"anonymous"`
	// StripAPIKey removes the API key header before forwarding.
	StripAPIKey bool `mapstructure:"strip_api_key"`
}

// Quota holds calendar and ledger settings.
type Quota struct {
	// Timezone is the IANA zone calendar periods are computed in.
	Timezone string `mapstructure:"timezone"`
	// FlushInterval is how often hot-path usage reaches the ledger.
	FlushInterval time.Duration `mapstructure:"flush_interval"`
}

// Defaults holds defaults for callers.
type Defaults struct {
	// Plan applies to keys and users that name none.
	Plan string `mapstructure:"plan"`
}

// Limits is a rate list and a quota list. A missing (nil) list inherits;
// an empty one ("rate: []") replaces the inherited list with nothing.
type Limits struct {
	// Rate lists sliding-window limits, at most one per window.
	Rate []Limit `mapstructure:"rate"`
	// Quota lists calendar quotas, at most one per period.
	Quota []Limit `mapstructure:"quota"`
}

// Plan is a named set of limits.
type Plan struct {
	Limits `mapstructure:",squash"`
	// Reputation, when set, scales the limits of repeat violators.
	Reputation *Reputation `mapstructure:"reputation"`
}

// Reputation scales a subject's limits by Factor while its score is
// below Below.
type Reputation struct {
	// Below is a score in (0, 100].
	Below float64 `mapstructure:"below"`
	// Factor is in (0, 1].
	Factor float64 `mapstructure:"factor"`
}

// User gives a user a plan and optionally its own limits.
type User struct {
	// Plan names a plan; empty means Defaults.Plan.
	Plan   string `mapstructure:"plan"`
	Limits `mapstructure:",squash"`
}

// Key is an API key, by hash ("sha256:<hex>") or, discouraged, in plain text.
// Config.HashedKey gives its digest either way.
type Key struct {
	// ID names the key in logs, headers and the admin API.
	ID string `mapstructure:"id"`
	// Hash is "sha256:" and 64 hex digits (gaia-proxy hash-key).
	Hash string `mapstructure:"hash"`
	// Key is the key itself, logged as a warning at start.
	Key string `mapstructure:"key"`
	// User is the user the key belongs to, if any.
	User string `mapstructure:"user"`
	// Plan names a plan; empty means the user's, then Defaults.Plan.
	Plan   string `mapstructure:"plan"`
	Limits `mapstructure:",squash"`
}

// Route gives a group of paths a cost, extra limits, or an exemption.
type Route struct {
	// Name identifies the route; unique.
	Name string `mapstructure:"name"`
	// Methods restrict the route to these methods (upper case); empty
	// means all.
	Methods []string `mapstructure:"methods"`
	// Path is an exact path, a prefix ("/api/*") or a path.Match glob.
	Path string `mapstructure:"path"`
	// Cost is the units charged per request; Validate turns 0 into 1.
	Cost int64 `mapstructure:"cost"`
	// Exempt routes are never limited nor counted.
	Exempt bool `mapstructure:"exempt"`
	Limits `mapstructure:",squash"`
}

// Limit is one rate limit (Window) or quota (Period).
type Limit struct {
	// Name labels the limit; unique in the whole config when given.
	Name string `mapstructure:"name"`
	// Limit is the units allowed per Window or Period.
	Limit int64 `mapstructure:"limit"`
	// Window is a rate limit's sliding window, 1s to 24h.
	Window time.Duration `mapstructure:"window"`
	// Period is "hourly", "daily", "weekly" or "monthly".
	Period string `mapstructure:"period"`
	// Scope is "key", "user" or "global"; empty means key for rate
	// limits and user for quotas.
	Scope string `mapstructure:"scope"`
	// Shadow limits report violations but never refuse.
	Shadow bool `mapstructure:"shadow"`
	// Count is "admitted" (default) or "success" (quotas only: refund
	// requests the upstream failed).
	Count string `mapstructure:"count"`
}

// Alert is an alert rule: a condition held for a duration.
type Alert struct {
	// Name identifies the rule; unique.
	Name string `mapstructure:"name"`
	// When is "<metric> <op> <number>", like "violations_per_minute > 100".
	When string `mapstructure:"when"`
	// For is how long When must hold before the alert fires.
	For time.Duration `mapstructure:"for"`
	// Notify lists targets, each {webhook: <http(s) URL>}.
	Notify []map[string]string `mapstructure:"notify"`
}
