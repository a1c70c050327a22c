package limiter

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"math"
	"net/netip"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Scope says whose counter a limit charges.
type Scope uint8

const (
	// ScopeDefault is ScopeKey for rate limits and ScopeUser for quotas.
	ScopeDefault Scope = iota
	// ScopeKey charges the caller itself (its key, user or IP).
	ScopeKey
	// ScopeUser charges the caller's user, shared by all its keys; a
	// caller without a user counts alone.
	ScopeUser
	// ScopeGlobal charges one budget shared by every caller.
	ScopeGlobal
)

// String returns the configuration word for s.
func (s Scope) String() string {
	switch s {
	case ScopeKey:
		return "key"
	case ScopeUser:
		return "user"
	case ScopeGlobal:
		return "global"
	}
	return "default"
}

// The bounds of a Spec, wherever one is written (the configuration, a
// runtime rule).
const (
	MaxLimit  = 1_000_000_000 // the largest limit (and route cost)
	MinWindow = time.Second   // the shortest rate window
	MaxWindow = 24 * time.Hour
)

// Spec is a configured limit, not yet bound to a caller.
type Spec struct {
	// Name labels the limit; empty means "<owner>-<window or period>".
	Name   string
	Limit  int64
	Window time.Duration // rate limits
	Period Period        // quotas; nil for rate limits
	Scope  Scope
	Shadow bool
	// Refundable: the quota charges only requests the upstream answered
	// with 2xx or 3xx.
	Refundable bool
}

// dim names what a spec counts over, unique within one list: "r1s" or
// "qdaily".
func (s Spec) dim() string {
	if s.Period != nil {
		return "q" + s.Period.String()
	}
	return "r" + FormatWindow(s.Window)
}

func (s Spec) suffix() string {
	if s.Period != nil {
		return s.Period.String()
	}
	return FormatWindow(s.Window)
}

// Limits is a rate list and a quota list. A nil list means "inherit";
// an empty, non-nil list means "none".
type Limits struct {
	Rate  []Spec
	Quota []Spec
}

// Plan is a named set of limits.
type Plan struct {
	Name string
	Limits
}

// User gives a user a plan and optionally its own limits.
type User struct {
	ID   string
	Plan string // "" means the default plan
	Limits
}

// Key is an API key: the SHA-256 of the secret, never the secret.
type Key struct {
	ID   string
	Hash [sha256.Size]byte
	User string
	Plan string // "" means the user's plan, else the default plan
	Limits
}

// Route is a group of paths with its own cost and extra limits.
type Route struct {
	Name    string
	Methods []string // empty means any method
	// Path is exact ("/health"), a prefix ("/api/*") or a glob
	// ("/v1/*/items", path.Match syntax).
	Path   string
	Cost   int64 // units per request; 0 means 1
	Exempt bool  // never limited, never counted
	Limits
}

// Rule is a runtime override of a subject's limits ("key:acme-prod",
// "user:alice" or "plan:free"), layered on top of the configuration.
type Rule struct {
	ID        string
	Subject   string
	Limits    Limits
	ExpiresAt time.Time // zero: never
}

// PolicyConfig is everything a Policy is built from.
type PolicyConfig struct {
	DefaultPlan   string
	AnonymousPlan string // plan of callers known only by IP; "" means "anonymous"
	Shadow        bool   // every limit is a shadow limit
	Plans         []Plan
	Users         []User
	Keys          []Key
	Routes        []Route
	Rules         []Rule
}

// Policy answers who a caller is and which limits apply to a request. It
// is immutable; a reload builds a new one.
type Policy struct {
	cfg    PolicyConfig
	plans  map[string]*Plan
	users  map[string]*User
	keys   map[[sha256.Size]byte]*Key
	keyIDs map[string]*Key
	routes []route
	rules  map[string]*Rule

	// cache holds the limits of subjects seen, per route (the last one
	// for no route); see For.
	cache    []sync.Map // subject ID -> *cachedLimits
	cached   atomic.Int64
	expiries []int64 // the rules' expiries, Unix ns, ascending
}

// cachedLimits are a subject's limits on a route, good until a rule
// expires (Unix ns; math.MaxInt64: none will).
type cachedLimits struct {
	limits []Limit
	until  int64
}

// maxCached bounds the subjects For remembers (per policy, so a reload
// starts afresh); past it, limits are built per request.
const maxCached = 50000

type route struct {
	*Route
	match func(string) bool
}

// NewPolicy checks cfg's references and builds a Policy from it.
func NewPolicy(cfg PolicyConfig) (*Policy, error) {
	if cfg.AnonymousPlan == "" {
		cfg.AnonymousPlan = "anonymous"
	}
	p := &Policy{
		cfg:    cfg,
		plans:  make(map[string]*Plan, len(cfg.Plans)),
		users:  make(map[string]*User, len(cfg.Users)),
		keys:   make(map[[sha256.Size]byte]*Key, len(cfg.Keys)),
		keyIDs: make(map[string]*Key, len(cfg.Keys)),
		rules:  make(map[string]*Rule, len(cfg.Rules)),
	}
	for i := range cfg.Plans {
		p.plans[strings.ToLower(cfg.Plans[i].Name)] = &cfg.Plans[i]
	}
	planOK := func(name string) bool {
		_, ok := p.plans[strings.ToLower(name)]
		return name == "" || ok
	}
	if len(p.plans) > 0 && !planOK(cfg.DefaultPlan) {
		return nil, fmt.Errorf("default plan %q is not defined", cfg.DefaultPlan)
	}
	for i := range cfg.Users {
		u := &cfg.Users[i]
		if !planOK(u.Plan) {
			return nil, fmt.Errorf("user %q: plan %q is not defined", u.ID, u.Plan)
		}
		p.users[strings.ToLower(u.ID)] = u
	}
	for i := range cfg.Keys {
		k := &cfg.Keys[i]
		if _, dup := p.keyIDs[k.ID]; dup {
			return nil, fmt.Errorf("key %q: id used twice", k.ID)
		}
		p.keyIDs[k.ID] = k
		if _, dup := p.keys[k.Hash]; dup {
			return nil, fmt.Errorf("key %q: same secret as another key", k.ID)
		}
		if !planOK(k.Plan) {
			return nil, fmt.Errorf("key %q: plan %q is not defined", k.ID, k.Plan)
		}
		p.keys[k.Hash] = k
	}
	for i := range cfg.Routes {
		r := &cfg.Routes[i]
		m, err := pathMatcher(r.Path)
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", r.Name, err)
		}
		p.routes = append(p.routes, route{Route: r, match: m})
	}
	for i := range cfg.Rules {
		r := &cfg.Rules[i]
		p.rules[CanonicalSubject(r.Subject)] = r // rules stored before user ids were folded still apply
		if !r.ExpiresAt.IsZero() {
			p.expiries = append(p.expiries, r.ExpiresAt.UnixNano())
		}
	}
	slices.Sort(p.expiries)
	p.cache = make([]sync.Map, len(p.routes)+1)
	return p, nil
}

// Config returns what p was built from. Callers must not modify it.
func (p *Policy) Config() PolicyConfig { return p.cfg }

// WithRules returns a copy of p with its runtime rules replaced.
func (p *Policy) WithRules(rules []Rule) (*Policy, error) {
	cfg := p.cfg
	cfg.Rules = rules
	return NewPolicy(cfg)
}

// pathMatcher compiles a route path: exact, prefix ("/api/*") or glob.
// Patterns are cleaned like request paths (see CleanPath), so that
// "/api/" and "/api" name the same route.
func pathMatcher(pattern string) (func(string) bool, error) {
	if !strings.HasPrefix(pattern, "/") {
		return nil, fmt.Errorf("path %q must start with /", pattern)
	}
	if base, ok := strings.CutSuffix(pattern, "/*"); ok && !strings.ContainsAny(base, "*?[\\") {
		base = path.Clean("/" + base)
		prefix := base + "/"
		if base == "/" {
			return func(string) bool { return true }, nil
		}
		return func(p string) bool { return p == base || strings.HasPrefix(p, prefix) }, nil
	}
	if !strings.ContainsAny(pattern, "*?[\\") {
		pattern = path.Clean(pattern)
		return func(p string) bool { return p == pattern }, nil
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("path %q: %w", pattern, err)
	}
	if len(pattern) > 1 {
		pattern = strings.TrimSuffix(pattern, "/")
	}
	return func(p string) bool {
		ok, _ := path.Match(pattern, p)
		return ok
	}, nil
}

// CleanPath is the form of a request path that routes are matched
// against: rooted, with "//" collapsed, "." and ".." resolved and no
// trailing slash (path.Clean). Matching the cleaned path means that
// "/api//confirm", "/api/./confirm", "/api/confirm/" and
// "/public/../api/confirm" meet the limits of "/api/confirm", which is
// where an upstream that normalises paths sends them. Matching is
// case-sensitive, as most upstreams' routing is. The request itself is
// forwarded as sent; see the proxy's identify.
func CleanPath(urlPath string) string {
	if urlPath == "" || urlPath[0] != '/' {
		urlPath = "/" + urlPath
	}
	return path.Clean(urlPath)
}

// Match returns the first route matching method and path, or nil. The
// path is cleaned first (CleanPath). A route whose methods include GET
// also matches HEAD, which servers answer as GET without the body.
func (p *Policy) Match(method, urlPath string) *Route {
	if i := p.match(method, CleanPath(urlPath)); i >= 0 {
		return p.routes[i].Route
	}
	return nil
}

// match returns the index of the first route matching method and the
// cleaned urlPath, or -1.
func (p *Policy) match(method, urlPath string) int {
	for i, r := range p.routes {
		if len(r.Methods) > 0 && !slices.Contains(r.Methods, method) &&
			(method != "HEAD" || !slices.Contains(r.Methods, "GET")) {
			continue
		}
		if r.match(urlPath) {
			return i
		}
	}
	return -1
}

// Subject is an identified caller.
type Subject struct {
	// ID is "key:<id>", "user:<id>" or "ip:<address>".
	ID    string
	KeyID string
	User  string
	Plan  string

	key *Key
}

// LookupKey finds the key whose secret hashes to sum. The map finds the
// candidate by digest, which tells an attacker nothing about the secret;
// the final comparison is constant-time all the same.
func (p *Policy) LookupKey(sum [sha256.Size]byte) (Subject, bool) {
	k, ok := p.keys[sum]
	if !ok || subtle.ConstantTimeCompare(k.Hash[:], sum[:]) != 1 {
		return Subject{}, false
	}
	return p.keySubject(k), true
}

// KeyByID returns the subject of the key with id, as LookupKey would for
// its secret, for the admin API.
func (p *Policy) KeyByID(id string) (Subject, bool) {
	k, ok := p.keyIDs[id]
	if !ok {
		return Subject{}, false
	}
	return p.keySubject(k), true
}

func (p *Policy) keySubject(k *Key) Subject {
	plan := k.Plan
	if plan == "" {
		plan = p.userPlan(k.User)
	}
	return Subject{ID: "key:" + k.ID, KeyID: k.ID, User: CanonicalUser(k.User), Plan: plan, key: k}
}

// ForUser returns the subject of a user known from a trusted header.
// User ids are case-insensitive: id is canonicalised (CanonicalUser), so
// that "Alice" and "alice" share one set of counters, as they share one
// plan.
func (p *Policy) ForUser(id string) Subject {
	id = CanonicalUser(id)
	return Subject{ID: "user:" + id, User: id, Plan: p.userPlan(id)}
}

// CanonicalUser returns the form of a user id that counters, rules and
// the forwarded X-Gaia-User use: lower case, as the configuration's
// users: and keys[].user are read. Every "user:<id>" subject is built
// from it.
func CanonicalUser(id string) string { return strings.ToLower(id) }

// CanonicalSubject returns subject with a "user:" id canonicalised
// (CanonicalUser); other subjects are returned as they are.
func CanonicalSubject(subject string) string {
	if id, ok := strings.CutPrefix(subject, "user:"); ok {
		return "user:" + CanonicalUser(id)
	}
	return subject
}

// ForIP returns the subject of an anonymous caller, by the key
// ClientKey gives its address.
func (p *Policy) ForIP(ip string) Subject {
	return Subject{ID: "ip:" + ip, Plan: p.cfg.AnonymousPlan}
}

// ClientKey is what an anonymous caller at a is counted by: its IPv4
// address, or its IPv6 /64 ("2001:db8:1:2::/64"). One IPv6 host commonly
// holds a whole /64 and may take any address in it, so counting by
// address would give it as many fresh limits as it likes, and the
// limiter a subject per address.
func ClientKey(a netip.Addr) string {
	a = a.Unmap()
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().String()
	}
	return a.String()
}

func (p *Policy) userPlan(id string) string {
	if u, ok := p.users[strings.ToLower(id)]; ok && u.Plan != "" {
		return u.Plan
	}
	return p.cfg.DefaultPlan
}

// Cost returns the units a request on route r costs (1 when r is nil).
func Cost(r *Route) int64 {
	if r == nil || r.Cost <= 0 {
		return 1
	}
	return r.Cost
}

// For returns every limit that applies to a request of s on route r
// (which must come from p.Match, or be nil) at time now, like Limits,
// but remembers them: the same subject on the same route gets the same
// slice, which callers must not modify. Requests of known subjects then
// build no strings. Remembered limits serve until the next runtime rule
// expiry after they were built, then are built again.
func (p *Policy) For(s Subject, r *Route, now time.Time) []Limit {
	c := &p.cache[len(p.cache)-1]
	if r != nil {
		i := slices.IndexFunc(p.routes, func(rt route) bool { return rt.Route == r })
		if i < 0 {
			return p.Limits(nil, s, r, now)
		}
		c = &p.cache[i]
	}
	v, seen := c.Load(s.ID)
	if seen {
		if e := v.(*cachedLimits); now.UnixNano() < e.until {
			return e.limits
		}
	}
	// The next expiry after now, read before the limits are built, so
	// that they are never kept past a rule they include.
	until := int64(math.MaxInt64)
	if i, _ := slices.BinarySearch(p.expiries, now.UnixNano()+1); i < len(p.expiries) {
		until = p.expiries[i]
	}
	l := slices.Clip(p.Limits(nil, s, r, now))
	if seen || p.cached.Add(1) <= maxCached {
		c.Store(s.ID, &cachedLimits{limits: l, until: until})
	}
	return l
}

// Limits returns every limit that applies to a request of s on route r
// (which may be nil) at time now, appended to dst.
func (p *Policy) Limits(dst []Limit, s Subject, r *Route, now time.Time) []Limit {
	rate, rateOwner := p.pick(s, now, func(l *Limits) []Spec { return l.Rate })
	quota, quotaOwner := p.pick(s, now, func(l *Limits) []Spec { return l.Quota })
	dst = p.bind(dst, s, "", rateOwner, rate)
	dst = p.bind(dst, s, "", quotaOwner, quota)
	if r != nil {
		src := "route:" + r.Name + "/"
		dst = p.bind(dst, s, src, r.Name, r.Rate)
		dst = p.bind(dst, s, src, r.Name, r.Quota)
	}
	return dst
}

// pick finds the list that applies to s, most specific first: a runtime
// rule on the key, the key's own list, a rule on the user, the user's
// list, a rule on the plan, the plan's list. It returns the list and the
// name of its owner for default limit names.
func (p *Policy) pick(s Subject, now time.Time, get func(*Limits) []Spec) ([]Spec, string) {
	rule := func(subject string) []Spec {
		if r, ok := p.rules[subject]; ok && (r.ExpiresAt.IsZero() || now.Before(r.ExpiresAt)) {
			return get(&r.Limits)
		}
		return nil
	}
	if s.KeyID != "" {
		if l := rule("key:" + s.KeyID); l != nil {
			return l, s.KeyID
		}
		if s.key != nil && get(&s.key.Limits) != nil {
			return get(&s.key.Limits), s.KeyID
		}
	}
	if s.User != "" {
		if l := rule("user:" + s.User); l != nil {
			return l, s.User
		}
		if u, ok := p.users[strings.ToLower(s.User)]; ok && get(&u.Limits) != nil {
			return get(&u.Limits), s.User
		}
	}
	if l := rule("plan:" + s.Plan); l != nil {
		return l, s.Plan
	}
	if pl, ok := p.plans[strings.ToLower(s.Plan)]; ok {
		return get(&pl.Limits), pl.Name
	}
	return nil, ""
}

// CounterSubject returns whose counter a Limit's Key names, as bind
// lays keys out ("{tag}<counter>/[route:<name>/]<dim>"): a subject
// ("key:acme-prod", "ip:203.0.113.9"), a user ("user:alice") or
// "global". Routes are p's, so that ids holding "/route:" or "}" (a user
// header may carry anything) still read right; false for a key p does
// not make.
func (p *Policy) CounterSubject(key string) (string, bool) {
	end := strings.LastIndexByte(key, '/') // before the dimension, which holds no "/"
	if !strings.HasPrefix(key, "{") || end < 0 {
		return "", false
	}
	rest, cut := key[1:end], 0 // "<tag>}<counter>[/route:<name>]"
	for _, r := range p.cfg.Routes {
		if src := "/route:" + r.Name; len(src) > cut && strings.HasSuffix(rest, src) {
			cut = len(src)
		}
	}
	if cut > 0 {
		if c, ok := tagCounter(rest[:len(rest)-cut]); ok {
			return c, true
		}
	}
	return tagCounter(rest) // an id that ends like a route's source
}

// tagCounter returns the counter of "<tag>}<counter>": the tag itself,
// or a key's own under its user's tag.
func tagCounter(s string) (string, bool) {
	own := ""
	for i := range len(s) {
		if s[i] != '}' {
			continue
		}
		tag, counter := s[:i], s[i+1:]
		if counter == tag {
			return counter, true
		}
		if own == "" && strings.HasPrefix(tag, "user:") && strings.HasPrefix(counter, "key:") {
			own = counter
		}
	}
	return own, own != ""
}

// bind turns specs into limits on s's counters. A route's limits
// (source "route:<name>/") count its requests; its cost is charged to
// the caller's own limits.
func (p *Policy) bind(dst []Limit, s Subject, source, owner string, specs []Spec) []Limit {
	for _, sp := range specs {
		scope := sp.Scope
		if scope == ScopeDefault {
			scope = ScopeKey
			if sp.Period != nil {
				scope = ScopeUser
			}
		}
		tag := s.ID
		if s.User != "" {
			tag = "user:" + s.User
		}
		counter := s.ID
		switch scope {
		case ScopeUser:
			counter = tag
		case ScopeGlobal:
			tag, counter = "global", "global"
		}
		name := sp.Name
		if name == "" {
			name = owner + "-" + sp.suffix()
		}
		dst = append(dst, Limit{
			Name:       name,
			Key:        "{" + tag + "}" + counter + "/" + source + sp.dim(),
			Limit:      sp.Limit,
			Window:     sp.Window,
			Period:     sp.Period,
			Shadow:     sp.Shadow || p.cfg.Shadow,
			Refundable: sp.Refundable,
			PerRequest: source != "",
		})
	}
	return dst
}
