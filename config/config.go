// Package config reads gaia-proxy's YAML, environment and flags into a
// Config, validates all of it at once, and watches the file for edits.
// It is the only package that imports viper.
package config

import "time"

// Config is the whole configuration file. Field tags are the YAML keys;
// every key can be overridden by GAIA_<SECTION>_<KEY> in the environment.
type Config struct {
	Listen          string        `mapstructure:"listen"`
	Upstream        string        `mapstructure:"upstream"`
	UpstreamTimeout time.Duration `mapstructure:"upstream_timeout"`
	// ShutdownTimeout bounds draining in-flight requests on SIGTERM.
	ShutdownTimeout time.Duration   `mapstructure:"shutdown_timeout"`
	Admin           Admin           `mapstructure:"admin"`
	Redis           Redis           `mapstructure:"redis"`
	Database        Database        `mapstructure:"database"`
	DataDir         string          `mapstructure:"data_dir"`
	Identity        Identity        `mapstructure:"identity"`
	Quota           Quota           `mapstructure:"quota"`
	Defaults        Defaults        `mapstructure:"defaults"`
	Shadow          bool            `mapstructure:"shadow"`
	Plans           map[string]Plan `mapstructure:"plans"`
	Users           map[string]User `mapstructure:"users"`
	Keys            []Key           `mapstructure:"keys"`
	Routes          []Route         `mapstructure:"routes"`
	Alerts          []Alert         `mapstructure:"alerts"`
}

// Admin is the admin listener.
type Admin struct {
	Listen string `mapstructure:"listen"`
	// Token is required when Listen is not a loopback address.
	Token string `mapstructure:"token"`
}

// Redis selects the hot-path store. All empty means in-process.
type Redis struct {
	URL          string        `mapstructure:"url"`
	ClusterAddrs []string      `mapstructure:"cluster_addrs"`
	Sentinel     Sentinel      `mapstructure:"sentinel"`
	Timeout      time.Duration `mapstructure:"timeout"`
	// FailureMode is "local", "open" or "closed".
	FailureMode string `mapstructure:"failure_mode"`
}

// Sentinel is a Redis Sentinel setup.
type Sentinel struct {
	Master string   `mapstructure:"master"`
	Addrs  []string `mapstructure:"addrs"`
}

// Database selects the durable ledger. Empty URL means the embedded store.
type Database struct {
	URL string `mapstructure:"url"`
}

// Identity says how callers are recognised.
type Identity struct {
	APIKeyHeaders []string `mapstructure:"api_key_headers"`
	UserHeader    string   `mapstructure:"user_header"`
	TrustedCIDRs  []string `mapstructure:"trusted_cidrs"`
	// Anonymous is "ip" or "reject".
	Anonymous   string `mapstructure:"anonymous"`
	StripAPIKey bool   `mapstructure:"strip_api_key"`
}

// Quota holds calendar and ledger settings.
type Quota struct {
	Timezone      string        `mapstructure:"timezone"`
	FlushInterval time.Duration `mapstructure:"flush_interval"`
}

// Defaults holds defaults for callers.
type Defaults struct {
	Plan string `mapstructure:"plan"`
}

// Limits is a rate list and a quota list; a missing list inherits.
type Limits struct {
	Rate  []Limit `mapstructure:"rate"`
	Quota []Limit `mapstructure:"quota"`
}

// Plan is a named set of limits.
type Plan struct {
	Limits     `mapstructure:",squash"`
	Reputation *Reputation `mapstructure:"reputation"`
}

// Reputation scales a subject's limits by Factor while its score is
// below Below.
type Reputation struct {
	Below  float64 `mapstructure:"below"`
	Factor float64 `mapstructure:"factor"`
}

// User gives a user a plan and optionally its own limits.
type User struct {
	Plan   string `mapstructure:"plan"`
	Limits `mapstructure:",squash"`
}

// Key is an API key, by hash ("sha256:<hex>") or, discouraged, in plain text.
type Key struct {
	ID     string `mapstructure:"id"`
	Hash   string `mapstructure:"hash"`
	Key    string `mapstructure:"key"`
	User   string `mapstructure:"user"`
	Plan   string `mapstructure:"plan"`
	Limits `mapstructure:",squash"`
}

// Route gives a group of paths a cost, extra limits, or an exemption.
type Route struct {
	Name    string   `mapstructure:"name"`
	Methods []string `mapstructure:"methods"`
	Path    string   `mapstructure:"path"`
	Cost    int64    `mapstructure:"cost"`
	Exempt  bool     `mapstructure:"exempt"`
	Limits  `mapstructure:",squash"`
}

// Limit is one rate limit (Window) or quota (Period).
type Limit struct {
	Name   string        `mapstructure:"name"`
	Limit  int64         `mapstructure:"limit"`
	Window time.Duration `mapstructure:"window"`
	// Period is "hourly", "daily", "weekly" or "monthly".
	Period string `mapstructure:"period"`
	// Scope is "key", "user" or "global"; empty means key for rate
	// limits and user for quotas.
	Scope  string `mapstructure:"scope"`
	Shadow bool   `mapstructure:"shadow"`
	// Count is "admitted" (default) or "success" (quotas only: refund
	// requests the upstream failed).
	Count string `mapstructure:"count"`
}

// Alert is an alert rule: a condition held for a duration.
type Alert struct {
	Name   string              `mapstructure:"name"`
	When   string              `mapstructure:"when"`
	For    time.Duration       `mapstructure:"for"`
	Notify []map[string]string `mapstructure:"notify"`
}
