package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"net/textproto"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gaia-proxy/gaia-proxy/internal/credential"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

var (
	periods = []string{"hourly", "daily", "weekly", "monthly"}
	metrics = []string{"violations_per_minute", "quota_used_pct", "rate_limited_per_minute", "requests_per_minute", "error_rate_pct"}
	ops     = []string{">", ">=", "<", "<=", "=="}
)

// Validate checks the whole config and returns every problem at once
// (errors.Join), each as "<key path>: <reason>, got <value>". Secrets
// (admin.token, keys' key, URL passwords) never appear in messages.
//
// Validate also normalises what it accepts, so that the rest of the
// program need not: route methods become upper case, a route cost of 0
// becomes 1, identity.trusted_cidrs become canonical prefixes (a bare IP
// address is accepted as a one-address prefix: /32 or /128), and plan and
// user references become lower case, as Load makes the keys of plans and
// users. Validating twice gives the same result.
func (c *Config) Validate() error {
	v := &validator{c: c, names: map[string]string{}}
	v.server()
	v.redis()
	v.identity()
	v.plans()
	v.keys()
	v.routes()
	v.alerts()
	return errors.Join(v.errs...)
}

// validator collects the problems of one config.
type validator struct {
	c     *Config
	errs  []error
	names map[string]string // limit name → key path of its first use
}

func (v *validator) bad(key, format string, a ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: "+format, append([]any{key}, a...)...))
}

func (v *validator) server() {
	c := v.c
	v.hostPort("listen", c.Listen)
	v.hostPort("admin.listen", c.Admin.Listen)
	if c.Upstream == "" {
		v.bad("upstream", `required: the URL of the service behind the proxy, like "http://127.0.0.1:9000"`)
	} else {
		v.httpURL("upstream", c.Upstream)
	}
	v.positive("upstream_timeout", c.UpstreamTimeout)
	v.positive("shutdown_timeout", c.ShutdownTimeout)
	if _, _, err := net.SplitHostPort(c.Admin.Listen); err == nil && c.Admin.Token == "" && !isLoopback(c.Admin.Listen) {
		v.bad("admin.token", "required when admin.listen is not a loopback address: the admin port refuses to start without a token, got admin.listen %q", c.Admin.Listen)
	}
	if u := c.Database.URL; strings.Contains(u, "://") {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "postgres" && p.Scheme != "postgresql") {
			v.bad("database.url", "must be a postgres:// or postgresql:// URL or a key=value DSN, got %s", showString(u))
		}
	}
	if c.Database.URL == "" && c.DataDir == "" {
		v.bad("data_dir", "required when database.url is empty: the embedded store lives there")
	}
	v.positive("quota.flush_interval", c.Quota.FlushInterval)
	switch _, err := time.LoadLocation(c.Quota.Timezone); {
	case c.Quota.Timezone == "Local" || c.Quota.Timezone == "":
		// Each host's own zone: replicas in different zones would count
		// one quota in different counters.
		v.bad("quota.timezone", "must name a zone, not %q: replicas on hosts in different zones would count quotas apart (want an IANA name like \"Europe/Paris\", or \"UTC\")", c.Quota.Timezone)
	case err != nil:
		v.bad("quota.timezone", "unknown time zone (want an IANA name like \"Europe/Paris\"), got %q", c.Quota.Timezone)
	}
}

func (v *validator) redis() {
	r := v.c.Redis
	var set []string
	if r.URL != "" {
		set = append(set, "url")
	}
	if len(r.ClusterAddrs) > 0 {
		set = append(set, "cluster_addrs")
	}
	if r.Sentinel.Master != "" || len(r.Sentinel.Addrs) > 0 {
		set = append(set, "sentinel")
	}
	if len(set) > 1 {
		v.bad("redis", "set at most one of url, cluster_addrs and sentinel, got %s", strings.Join(set, " and "))
	}
	if r.URL != "" {
		u, err := url.Parse(r.URL)
		switch {
		case err == nil && (u.Scheme == "redis" || u.Scheme == "rediss") && u.Host != "":
		case err == nil && u.Scheme == "unix" && u.Host == "" && u.Path != "":
			// A Redis on the same host, through its socket (unix:///run/redis.sock?db=0).
		default:
			v.bad("redis.url", "must be a redis:// or rediss:// URL with a host, or a unix:// URL with a socket path, got %s", showString(r.URL))
		}
	}
	for i, a := range r.ClusterAddrs {
		v.hostPort(fmt.Sprintf("redis.cluster_addrs[%d]", i), a)
	}
	switch {
	case r.Sentinel.Master == "" && len(r.Sentinel.Addrs) > 0:
		v.bad("redis.sentinel.master", "required with redis.sentinel.addrs")
	case r.Sentinel.Master != "" && len(r.Sentinel.Addrs) == 0:
		v.bad("redis.sentinel.addrs", "required with redis.sentinel.master")
	}
	for i, a := range r.Sentinel.Addrs {
		v.hostPort(fmt.Sprintf("redis.sentinel.addrs[%d]", i), a)
	}
	v.positive("redis.timeout", r.Timeout)
	v.oneOf("redis.failure_mode", r.FailureMode, "local", "open", "closed")
	if r.KeyPrefix == "" || strings.ContainsAny(r.KeyPrefix, "{}") || len(r.KeyPrefix) > 64 {
		v.bad("redis.key_prefix", "must be 1 to 64 characters without { or }, got %q", r.KeyPrefix)
	}
	if r.HoldRefusals < 0 || r.HoldRefusals > time.Minute {
		v.bad("redis.hold_refusals", "must be 0 (off) to 1m, got %v", r.HoldRefusals)
	}
	v.redisAuth(r)
}

// redisAuth checks Redis's credentials and TLS settings. Secrets are
// named, never shown.
func (v *validator) redisAuth(r Redis) {
	tlsOn := r.TLS.Enabled
	if u, err := url.Parse(r.URL); r.URL != "" && err == nil {
		if r.Username != "" && u.User.Username() != "" {
			v.bad("redis.username", "set here and in redis.url: keep one")
		}
		if _, ok := u.User.Password(); ok && r.Password != "" {
			v.bad("redis.password", "set here and in redis.url: keep one")
		}
		if r.TLS.Enabled {
			v.bad("redis.tls.enabled", "with redis.url the scheme says it: use a rediss:// URL")
		}
		tlsOn = u.Scheme == "rediss"
	}
	if r.Sentinel.Password != "" && r.Sentinel.Master == "" {
		v.bad("redis.sentinel.password", "set, but redis.sentinel.master is not")
	}
	if r.URL == "" && len(r.ClusterAddrs) == 0 && r.Sentinel.Master == "" {
		for _, f := range []struct {
			key string
			set bool
		}{{"redis.username", r.Username != ""}, {"redis.password", r.Password != ""}, {"redis.tls.enabled", r.TLS.Enabled}} {
			if f.set {
				v.bad(f.key, "set, but no Redis is (redis.url, redis.cluster_addrs or redis.sentinel)")
			}
		}
	}
	if !tlsOn {
		for _, f := range []struct{ key, val string }{
			{"redis.tls.ca_file", r.TLS.CAFile}, {"redis.tls.cert_file", r.TLS.CertFile},
			{"redis.tls.key_file", r.TLS.KeyFile}, {"redis.tls.server_name", r.TLS.ServerName},
		} {
			if f.val != "" {
				v.bad(f.key, "set, but TLS is off (turn it on with redis.tls.enabled, or a rediss:// redis.url)")
			}
		}
	}
	if (r.TLS.CertFile == "") != (r.TLS.KeyFile == "") {
		v.bad("redis.tls.cert_file", "and redis.tls.key_file go together: set both or neither")
	}
}

func (v *validator) identity() {
	id := &v.c.Identity
	seen := map[string]int{}
	for i, h := range id.APIKeyHeaders {
		key := fmt.Sprintf("identity.api_key_headers[%d]", i)
		if !isToken(h) {
			v.bad(key, "must be a header name, got %q", h)
			continue
		}
		ch := textproto.CanonicalMIMEHeaderKey(h)
		if j, dup := seen[ch]; dup {
			v.bad(key, "duplicates identity.api_key_headers[%d], got %q", j, h)
		}
		seen[ch] = i
	}
	if len(id.APIKeyHeaders) == 0 && len(v.c.Keys) > 0 {
		v.bad("identity.api_key_headers", "must not be empty when keys are configured")
	}
	if h := id.UserHeader; h != "" {
		if !isToken(h) {
			v.bad("identity.user_header", "must be a header name, got %q", h)
		} else if _, dup := seen[textproto.CanonicalMIMEHeaderKey(h)]; dup {
			v.bad("identity.user_header", "must differ from every identity.api_key_headers entry, got %q", h)
		}
	}
	for i, s := range id.TrustedCIDRs {
		p, err := parsePrefix(s)
		if err != nil {
			v.bad(fmt.Sprintf("identity.trusted_cidrs[%d]", i), "must be a CIDR like \"10.0.0.0/8\" or an IP address, got %q", s)
			continue
		}
		id.TrustedCIDRs[i] = p.String()
	}
	v.oneOf("identity.anonymous", id.Anonymous, "ip", "reject")
}

func (v *validator) plans() {
	c := v.c
	c.Defaults.Plan = strings.ToLower(c.Defaults.Plan)
	if len(c.Plans) > 0 {
		v.planRef("defaults.plan", c.Defaults.Plan)
		if _, ok := c.Plans["anonymous"]; !ok && c.Identity.Anonymous == "ip" {
			v.bad("plans.anonymous", `required when identity.anonymous is "ip": callers without credentials are limited by client IP under it (or set identity.anonymous: reject)`)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Plans)) {
		p, key := c.Plans[name], "plans."+name
		v.limits(key, p.Limits)
		if r := p.Reputation; r != nil {
			if !(r.Below > 0 && r.Below <= 100) {
				v.bad(key+".reputation.below", "must be in (0, 100], got %v", r.Below)
			}
			if !(r.Factor > 0 && r.Factor <= 1) {
				v.bad(key+".reputation.factor", "must be in (0, 1], got %v", r.Factor)
			}
		}
	}
	// User ids are case-insensitive (limiter.CanonicalUser). viper folds
	// map keys already; a Config built in code is folded here, and two
	// spellings of one id are an error rather than one silently winning.
	for _, id := range slices.Sorted(maps.Keys(c.Users)) {
		u, key := c.Users[id], "users."+id
		if err := credential.CheckUserID(id); err != nil {
			// The proxy answers such an id in the user header with 400
			// invalid_user_id: this user could never be seen.
			v.bad("users", "user id %v (%s), got %q", err, credential.UserIDRule, id)
		}
		u.Plan = strings.ToLower(u.Plan)
		if u.Plan != "" {
			v.planRef(key+".plan", u.Plan)
		}
		v.limits(key, u.Limits)
		canon := limiter.CanonicalUser(id)
		if canon == id {
			c.Users[id] = u
			continue
		}
		if _, dup := c.Users[canon]; dup {
			v.bad(key, "names the same user as users.%s (user ids are case-insensitive)", canon)
			continue
		}
		delete(c.Users, id)
		c.Users[canon] = u
	}
}

func (v *validator) keys() {
	ids := map[string]int{}
	secrets := map[[sha256.Size]byte]int{}
	for i := range v.c.Keys {
		k, key := &v.c.Keys[i], fmt.Sprintf("keys[%d]", i)
		switch {
		case k.ID == "":
			v.bad(key+".id", "required")
		case !isID(k.ID):
			v.bad(key+".id", "must use only letters, digits, '.', '_' and '-', got %q", k.ID)
		default:
			if j, dup := ids[k.ID]; dup {
				v.bad(key+".id", "must be unique, already used by keys[%d], got %q", j, k.ID)
			}
			ids[k.ID] = i
		}
		switch {
		case k.Hash != "" && k.Key != "":
			v.bad(key, "must set exactly one of hash and key, got both")
		case k.Hash == "" && k.Key == "":
			v.bad(key, "must set exactly one of hash and key, got neither")
		case k.Key != "" && credential.CheckKey(k.Key) != nil:
			// The proxy refuses such a key as malformed before it looks it
			// up: it could never be used. The key itself is a secret.
			v.bad(key+".key", "%v (%s)", credential.CheckKey(k.Key), credential.KeyRule)
		default:
			if sum, err := v.c.HashedKey(i); err != nil {
				v.bad(key+".hash", `must be "sha256:" followed by 64 hex digits`)
			} else if j, dup := secrets[sum]; dup {
				v.bad(key, "has the same secret as keys[%d]", j)
			} else {
				secrets[sum] = i
			}
		}
		if k.User != "" {
			if err := credential.CheckUserID(k.User); err != nil {
				v.bad(key+".user", "%v (%s), got %q", err, credential.UserIDRule, k.User)
			}
		}
		k.Plan, k.User = strings.ToLower(k.Plan), limiter.CanonicalUser(k.User)
		if k.Plan != "" {
			v.planRef(key+".plan", k.Plan)
		}
		v.limits(key, k.Limits)
	}
}

func (v *validator) routes() {
	names := map[string]int{}
	for i := range v.c.Routes {
		r, key := &v.c.Routes[i], fmt.Sprintf("routes[%d]", i)
		v.uniqueName(key, "routes", r.Name, names, i)
		switch {
		case r.Path == "":
			v.bad(key+".path", "required")
		case !strings.HasPrefix(r.Path, "/"):
			v.bad(key+".path", `must start with "/", got %q`, r.Path)
		default:
			if _, err := path.Match(r.Path, "/"); err != nil {
				v.bad(key+".path", "must be an exact path, a prefix (\"/api/*\") or a glob, got %q", r.Path)
			}
		}
		for j, m := range r.Methods {
			if up := strings.ToUpper(m); isToken(up) {
				r.Methods[j] = up
			} else {
				v.bad(fmt.Sprintf("%s.methods[%d]", key, j), "must be an HTTP method like GET, got %q", m)
			}
		}
		switch {
		case r.Cost < 0 || r.Cost > limiter.MaxLimit:
			v.bad(key+".cost", "must be between 0 and %d (0 means 1), got %d", limiter.MaxLimit, r.Cost)
		case r.Cost == 0:
			r.Cost = 1
		}
		if r.Exempt && (len(r.Rate) > 0 || len(r.Quota) > 0) {
			v.bad(key+".exempt", "cannot be true on a route with rate or quota limits: an exempt route is never limited")
		}
		v.limits(key, r.Limits)
	}
}

func (v *validator) alerts() {
	names := map[string]int{}
	for i, a := range v.c.Alerts {
		key := fmt.Sprintf("alerts[%d]", i)
		v.uniqueName(key, "alerts", a.Name, names, i)
		if err := parseCondition(a.When); err != nil {
			v.bad(key+".when", "%v, got %q", err, a.When)
		}
		if a.For < 0 {
			v.bad(key+".for", "must be >= 0, got %s", fmtDuration(a.For))
		}
		for j, n := range a.Notify {
			nk := fmt.Sprintf("%s.notify[%d]", key, j)
			if _, ok := n["webhook"]; !ok || len(n) != 1 {
				v.bad(nk, "must be {webhook: <http(s) URL>}, got keys %q", slices.Sorted(maps.Keys(n)))
				continue
			}
			v.httpURL(nk+".webhook", n["webhook"])
		}
	}
}

// limits checks the rate and quota lists of one plan, user, key or route.
func (v *validator) limits(key string, l Limits) {
	v.limitList(key+".rate", l.Rate, false)
	v.limitList(key+".quota", l.Quota, true)
}

// limitList checks a rate or quota list. Its caps are the admin API's
// (quota.MaxLimits, quota.MaxNameBytes): every response to a subject
// lists all its limits, names included, in RateLimit-Policy.
func (v *validator) limitList(key string, list []Limit, isQuota bool) {
	if len(list) > quota.MaxLimits {
		v.bad(key, "at most %d limits, got %d", quota.MaxLimits, len(list))
	}
	seen := map[string]int{} // window or period → index
	for i, l := range list {
		k := fmt.Sprintf("%s[%d]", key, i)
		if l.Limit < 1 || l.Limit > limiter.MaxLimit {
			v.bad(k+".limit", "must be between 1 and %d, got %d", limiter.MaxLimit, l.Limit)
		}
		slot, field, shown := "", "", ""
		if isQuota {
			if l.Window != 0 {
				v.bad(k+".window", "a quota has a period, not a window, got %s", fmtDuration(l.Window))
			}
			switch {
			case l.Period == "":
				v.bad(k+".period", "required: one of %s", strings.Join(periods, ", "))
			case !slices.Contains(periods, l.Period):
				v.bad(k+".period", "must be one of %s, got %q", strings.Join(periods, ", "), l.Period)
			default:
				slot, field, shown = l.Period, "period", strconv.Quote(l.Period)
			}
		} else {
			if l.Period != "" {
				v.bad(k+".period", "a rate limit has a window, not a period, got %q", l.Period)
			}
			if l.Window < limiter.MinWindow || l.Window > limiter.MaxWindow {
				v.bad(k+".window", "must be between %s and %s, got %s", fmtDuration(limiter.MinWindow), fmtDuration(limiter.MaxWindow), fmtDuration(l.Window))
			} else {
				slot, field, shown = l.Window.String(), "window", fmtDuration(l.Window)
			}
			if l.Count == "success" {
				v.bad(k+".count", `"success" applies only to quotas, got "success"`)
			}
		}
		if slot != "" {
			if j, dup := seen[slot]; dup {
				v.bad(k+"."+field, "duplicates %s[%d]: one limit per %s in a list, got %s", key, j, field, shown)
			}
			seen[slot] = i
		}
		if l.Scope != "" {
			v.oneOf(k+".scope", l.Scope, "key", "user", "global")
		}
		if l.Count != "" {
			v.oneOf(k+".count", l.Count, "admitted", "success")
		}
		if len(l.Name) > quota.MaxNameBytes {
			v.bad(k+".name", "at most %d bytes, got %d", quota.MaxNameBytes, len(l.Name))
		} else if l.Name != "" {
			if first, dup := v.names[l.Name]; dup {
				v.bad(k+".name", "must be unique, already used by %s, got %q", first, l.Name)
			} else {
				v.names[l.Name] = k
			}
		}
	}
}

// uniqueName checks the required, unique name of a route or alert.
func (v *validator) uniqueName(key, list, name string, seen map[string]int, i int) {
	if name == "" {
		v.bad(key+".name", "required")
		return
	}
	if j, dup := seen[name]; dup {
		v.bad(key+".name", "must be unique, already used by %s[%d], got %q", list, j, name)
		return
	}
	seen[name] = i
}

func (v *validator) planRef(key, plan string) {
	switch _, ok := v.c.Plans[plan]; {
	case len(v.c.Plans) == 0:
		v.bad(key, "must name a plan in plans, but none is configured, got %q", plan)
	case !ok:
		v.bad(key, "must name a plan in plans (%s), got %q", strings.Join(slices.Sorted(maps.Keys(v.c.Plans)), ", "), plan)
	}
}

func (v *validator) hostPort(key, s string) {
	_, port, err := net.SplitHostPort(s)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		v.bad(key, `must be host:port, like ":8080" or "127.0.0.1:9090", got %q`, s)
	}
}

func (v *validator) httpURL(key, s string) {
	if u, err := url.Parse(s); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.bad(key, "must be an absolute http or https URL, got %s", showString(s))
	}
}

func (v *validator) positive(key string, d time.Duration) {
	if d <= 0 {
		v.bad(key, "must be > 0, got %s", fmtDuration(d))
	}
}

func (v *validator) oneOf(key, val string, allowed ...string) {
	if !slices.Contains(allowed, val) {
		v.bad(key, "must be one of %s, got %q", strings.Join(allowed, ", "), val)
	}
}

// Warnings lists what is allowed but worth a log line at start. It never
// includes a secret.
func (c *Config) Warnings() []string {
	var w []string
	if len(c.Plans) == 0 {
		w = append(w, "plans: none configured, so callers without limits of their own are not limited")
	}
	if c.Shadow {
		w = append(w, "shadow: true, so violations are recorded and reported but no request is refused")
	}
	for i, k := range c.Keys {
		if k.Key != "" {
			w = append(w, fmt.Sprintf("keys[%d].key: API key %q is in plain text; put its hash in keys[%d].hash instead (gaia-proxy hash-key)", i, k.ID, i))
		}
	}
	for i, s := range c.Identity.TrustedCIDRs {
		if p, err := parsePrefix(s); err == nil && p.Bits() == 0 {
			w = append(w, fmt.Sprintf("identity.trusted_cidrs[%d]: %s lets any peer assert identity.user_header and X-Forwarded-For", i, s))
		}
	}
	redis := c.Redis.URL != "" || len(c.Redis.ClusterAddrs) > 0 || c.Redis.Sentinel.Master != ""
	if redis && c.Database.URL == "" {
		w = append(w, "database.url: not set, so runtime rules, violations, analytics and the quota ledger stay in this replica's data_dir; replicas sharing this Redis share its limits but not those: give them one database.url")
	}
	if !redis && c.Database.URL != "" {
		w = append(w, "redis.url: not set, so this replica enforces limits in its own process; if other replicas share this database, each admits up to a whole limit, and the ledger keeps the highest quota count of them, not their sum: give them one Redis")
	}
	return append(w, c.ignoredEnv...)
}

// HashedKey returns the SHA-256 digest of keys[i]'s secret, whether the
// config gives it as hash or as plain key.
func (c *Config) HashedKey(i int) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	if i < 0 || i >= len(c.Keys) {
		return sum, fmt.Errorf("keys[%d]: no such key", i)
	}
	k := c.Keys[i]
	switch {
	case k.Hash != "":
		h, ok := strings.CutPrefix(strings.ToLower(k.Hash), "sha256:")
		if !ok || len(h) != hex.EncodedLen(len(sum)) {
			return sum, fmt.Errorf(`keys[%d].hash: must be "sha256:" followed by 64 hex digits`, i)
		}
		if _, err := hex.Decode(sum[:], []byte(h)); err != nil {
			return sum, fmt.Errorf(`keys[%d].hash: must be "sha256:" followed by 64 hex digits`, i)
		}
		return sum, nil
	case k.Key != "":
		return sha256.Sum256([]byte(k.Key)), nil
	}
	return sum, fmt.Errorf("keys[%d]: has neither hash nor key", i)
}

// HashKey returns the config form of an API key's hash: "sha256:<hex>".
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// parseCondition checks an alert condition "<metric> <op> <number>".
func parseCondition(s string) error {
	i := strings.IndexAny(s, "<>=!")
	if i < 0 {
		return fmt.Errorf(`must be "<metric> <op> <number>", like "violations_per_minute > 100"`)
	}
	metric, rest := strings.TrimSpace(s[:i]), s[i:]
	j := len(rest) - len(strings.TrimLeft(rest, "<>=!"))
	op, num := rest[:j], strings.TrimSpace(rest[j:])
	if !slices.Contains(metrics, metric) {
		return fmt.Errorf("unknown metric %q (want one of %s)", metric, strings.Join(metrics, ", "))
	}
	if !slices.Contains(ops, op) {
		return fmt.Errorf("unknown operator %q (want one of %s)", op, strings.Join(ops, " "))
	}
	if f, err := strconv.ParseFloat(num, 64); err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("threshold %q is not a number", num)
	}
	return nil
}

// parsePrefix reads a CIDR, or a bare IP address as a one-address prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return a.Prefix(a.BitLen())
	}
	p, err := netip.ParsePrefix(s)
	return p.Masked(), err
}

// isLoopback reports whether the host of a host:port address is loopback.
// An empty host means every interface, so it is not.
func isLoopback(hostPort string) bool {
	host, _, _ := net.SplitHostPort(hostPort)
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// isID reports whether s is a valid key id: letters, digits, '.', '_', '-'.
func isID(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return s != ""
}

// isToken reports whether s is an HTTP token (RFC 9110): a method or a
// header name.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r >= 0x80 || !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r)) {
			return false
		}
	}
	return true
}

// fmtDuration prints a duration without zero units: "48h", "1m", "1h30m".
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
