package config

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// LoadOptions says where Load reads from. The zero value reads nothing but
// the defaults.
type LoadOptions struct {
	// File is the YAML file. Empty means flags and environment only.
	File string
	// Env is the environment in os.Environ form ("KEY=value"). Nil means
	// none; main passes os.Environ(). Empty values count as unset.
	Env []string
	// Overrides are values from command-line flags, keyed by config key
	// ("listen", "admin.listen", "upstream", "redis.url", "database.url",
	// "data_dir", ...). They beat everything else. Pass only flags the user
	// set.
	Overrides map[string]any
}

// keyDelim separates viper key parts. Viper's default "." would split plan
// names and user ids that contain dots ("alice@example.com").
const keyDelim = "\x1f"

var durationType = reflect.TypeFor[time.Duration]()

// Load reads the config from, in increasing precedence: the defaults (as in
// SPEC §3), the file, DATABASE_URL (database.url) and PORT (listen ":$PORT"),
// GAIA_<SECTION>_<KEY> environment variables, and o.Overrides. Every key
// that is not under plans, users, keys, routes or alerts has a GAIA_
// variable (GAIA_REDIS_URL, GAIA_IDENTITY_TRUSTED_CIDRS="10.0.0.0/8,::1");
// lists in the environment are comma-separated. Durations use Go syntax
// ("50ms", "1m", "24h").
//
// Load is strict: an unknown key or a value of the wrong type is an error
// naming its full path (only an unknown key set to an empty mapping, which
// viper drops, goes unseen). Viper lower-cases every key, so plan names and
// user ids under plans: and users: are lower-cased; Validate lower-cases
// references to them, so they match in any case. A section left empty
// keeps its defaults. Load ends with Validate, and returns every problem
// it found at once, one per line.
func Load(o LoadOptions) (*Config, error) {
	var data []byte
	if o.File != "" {
		var err error
		if data, err = os.ReadFile(o.File); err != nil {
			return nil, err // *PathError names the file
		}
	}
	return load(o.File, data, o)
}

// load is Load with the file's content already read.
func load(name string, data []byte, o LoadOptions) (*Config, error) {
	file := viper.NewWithOptions(viper.KeyDelimiter(keyDelim))
	file.SetConfigType("yaml")
	if err := file.ReadConfig(bytes.NewReader(data)); err != nil {
		if pe := (viper.ConfigParseError{}); errors.As(err, &pe) {
			err = pe.Unwrap()
		}
		return nil, fmt.Errorf("%s: %w%s", name, err, colonHint(data, err))
	}
	if errs := foldedTwice(data); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// AllSettings drops null values and empty maps; Get of a top-level key
	// returns it as read, nulls included.
	cfgType := reflect.TypeFor[Config]()
	tree := map[string]any{}
	for k := range fields(cfgType) {
		tree[k] = file.Get(k)
	}
	for _, k := range file.AllKeys() {
		top, _, _ := strings.Cut(k, keyDelim)
		tree[top] = file.Get(top)
	}
	if errs := checkShape("", tree, cfgType); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	v := viper.NewWithOptions(viper.KeyDelimiter(keyDelim))
	if err := v.MergeConfigMap(prune(tree, cfgType).(map[string]any)); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	leaves := leafKeys(cfgType, "", nil)
	def := reflect.ValueOf(defaultConfig())
	for _, l := range leaves {
		if f := def.FieldByIndex(l.index); !f.IsZero() {
			v.SetDefault(vkey(l.key), f.Interface())
		}
	}

	// Set writes one layer, so set sources from lowest to highest precedence.
	env := environ(o.Env)
	var errs []error
	set := func(l leaf, val any, from string) {
		if e := checkShape(l.key, val, l.typ); len(e) > 0 {
			for _, err := range e {
				errs = append(errs, fmt.Errorf("%w (from %s)", err, from))
			}
			return
		}
		v.Set(vkey(l.key), val)
	}
	byKey := map[string]leaf{}
	for _, l := range leaves {
		byKey[l.key] = l
	}
	if p := env["PORT"]; p != "" {
		set(byKey["listen"], ":"+p, "PORT")
	}
	if u := env["DATABASE_URL"]; u != "" {
		set(byKey["database.url"], u, "DATABASE_URL")
	}
	envNames := make([]string, 0, len(leaves))
	for _, l := range leaves {
		name := envName(l.key)
		envNames = append(envNames, name)
		if val := env[name]; val != "" {
			set(l, val, name)
		}
	}
	// A GAIA_ variable that names no key is most likely a typo: say so
	// rather than run without it (the keys under plans, users, keys,
	// routes and alerts come from the file only).
	var ignored []string
	for _, name := range slices.Sorted(maps.Keys(env)) {
		if strings.HasPrefix(name, "GAIA_") && env[name] != "" && !slices.Contains(envNames, name) {
			ignored = append(ignored, fmt.Sprintf("%s: names no config key, ignored%s", name, suggest(name, envNames)))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(o.Overrides)) {
		l, ok := byKey[k]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: unknown key%s (from flags)", k, suggest(k, slices.Collect(maps.Keys(byKey)))))
			continue
		}
		set(l, o.Overrides[k], "flags")
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	var c Config
	if err := v.UnmarshalExact(&c, viper.DecodeHook(decodeHook)); err != nil {
		return nil, fmt.Errorf("config: decode: %w", err) // checkShape should have caught it
	}
	c.ignoredEnv = ignored
	// A plan or user without settings ("plans: {unlimited: }") exists:
	// decode plans and users, which only the file sets, as read.
	c.Plans, c.Users = nil, nil
	if err := errors.Join(
		v.UnmarshalKey("plans", &c.Plans, viper.DecodeHook(decodeHook)),
		v.UnmarshalKey("users", &c.Users, viper.DecodeHook(decodeHook)),
	); err != nil {
		return nil, fmt.Errorf("config: decode: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// colonHint explains go-yaml's one surprise: a plain value that starts
// with ":" inside [ ] or { }, like [::1/128], is a syntax error
// (go-yaml/yaml#956) although YAML allows it.
func colonHint(data []byte, err error) string {
	m := regexp.MustCompile(`line (\d+)`).FindStringSubmatch(err.Error())
	if m == nil {
		return ""
	}
	n, _ := strconv.Atoi(m[1])
	lines := strings.Split(string(data), "\n")
	for _, i := range []int{n - 1, n} { // the error may point at the line before
		if i >= 0 && i < len(lines) && regexp.MustCompile(`[\[{,]\s*:\S`).MatchString(lines[i]) {
			return fmt.Sprintf(` (line %d: quote values that start with ":" inside [ ] or { }, as in ["::1/128"])`, i+1)
		}
	}
	return ""
}

// prune drops the nulls that stand for struct fields, so that a section
// left empty ("redis:" with every line commented out) keeps its defaults:
// viper would take it as set. A null plan or user stays: it exists.
func prune(val any, t reflect.Type) any {
	switch t.Kind() {
	case reflect.Pointer:
		return prune(val, t.Elem())
	case reflect.Struct:
		m, ok := val.(map[string]any)
		if !ok || t == durationType {
			return val
		}
		fs, out := fields(t), map[string]any{}
		for k, e := range m {
			if e != nil {
				out[k] = prune(e, fs[k])
			}
		}
		return out
	case reflect.Map:
		if m, ok := val.(map[string]any); ok {
			out := map[string]any{}
			for k, e := range m {
				out[k] = prune(e, t.Elem())
			}
			return out
		}
	case reflect.Slice:
		if l, ok := val.([]any); ok {
			out := make([]any, len(l))
			for i, e := range l {
				out[i] = prune(e, t.Elem())
			}
			return out
		}
	}
	return val
}

// defaultConfig holds the defaults of SPEC §3's scalar settings.
func defaultConfig() Config {
	return Config{
		Listen:          ":8080",
		UpstreamTimeout: 30 * time.Second,
		ShutdownTimeout: 8 * time.Second,
		Admin:           Admin{Listen: "127.0.0.1:9090"},
		Redis:           Redis{Timeout: 50 * time.Millisecond, FailureMode: "local", KeyPrefix: "gaia:", HoldRefusals: time.Second},
		DataDir:         "./gaia-data",
		Identity: Identity{
			APIKeyHeaders: []string{"X-API-Key", "Authorization"},
			UserHeader:    "X-User-ID",
			TrustedCIDRs:  []string{"127.0.0.1/32", "::1/128"},
			Anonymous:     "ip",
		},
		Quota:    Quota{Timezone: "UTC", FlushInterval: time.Second},
		Defaults: Defaults{Plan: "free"},
	}
}

// vkey turns a dotted config key into a viper key.
func vkey(k string) string { return strings.ReplaceAll(k, ".", keyDelim) }

// envName is the GAIA_ variable of a config key: "redis.url" is GAIA_REDIS_URL.
func envName(k string) string {
	return "GAIA_" + strings.ToUpper(strings.ReplaceAll(k, ".", "_"))
}

// environ turns os.Environ form into a map; later entries win, as in exec.
func environ(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// leaf is a key with one fixed path: a scalar or a string list outside the
// maps and lists of structs (plans, users, keys, routes, alerts).
type leaf struct {
	key   string // "admin.listen"
	index []int  // field index in Config
	typ   reflect.Type
}

// leafKeys lists the leaves of struct type t from its mapstructure tags.
func leafKeys(t reflect.Type, prefix string, index []int) []leaf {
	var out []leaf
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() { // Config.ignoredEnv: what Load found, read from no source
			continue
		}
		name, _ := tagName(f)
		key := prefix + name
		idx := append(slices.Clone(index), i)
		switch k := f.Type.Kind(); {
		case k == reflect.Struct && f.Type != durationType:
			out = append(out, leafKeys(f.Type, key+".", idx)...)
		case k == reflect.Map, k == reflect.Pointer, k == reflect.Slice && f.Type.Elem().Kind() != reflect.String:
			// not a leaf: plans, users, keys, routes, alerts
		default:
			out = append(out, leaf{key: key, index: idx, typ: f.Type})
		}
	}
	return out
}

// tagName returns a field's mapstructure name and whether it is squashed.
func tagName(f reflect.StructField) (name string, squash bool) {
	name, opts, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, slices.Contains(strings.Split(opts, ","), "squash")
}

// fields maps the keys of struct type t to their types, with squashed
// embedded structs flattened, as mapstructure decodes them.
func fields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, squash := tagName(f)
		if squash {
			for k, ft := range fields(f.Type) {
				m[k] = ft
			}
			continue
		}
		m[name] = f.Type
	}
	return m
}

// checkShape reports, by full key path, every unknown key and every value
// that cannot decode into t. val is what viper read (maps with lower-cased
// string keys, lists, scalars) or a value from the environment or flags.
func checkShape(path string, val any, t reflect.Type) []error {
	if val == nil {
		return nil
	}
	bad := func(format string, a ...any) []error {
		return []error{fmt.Errorf("%s: "+format, append([]any{path}, a...)...)}
	}
	switch {
	case t == durationType:
		if _, err := toDuration(val); err != nil {
			return bad("%v", err)
		}
	case t.Kind() == reflect.Pointer:
		return checkShape(path, val, t.Elem())
	case t.Kind() == reflect.Struct:
		m, ok := val.(map[string]any)
		if !ok {
			return bad("must be a mapping, got %s", kind(val))
		}
		fs := fields(t)
		var errs []error
		for _, k := range slices.Sorted(maps.Keys(m)) {
			ft, ok := fs[k]
			if !ok {
				errs = append(errs, fmt.Errorf("%s: unknown key%s", join(path, k), suggest(k, slices.Collect(maps.Keys(fs)))))
				continue
			}
			errs = append(errs, checkShape(join(path, k), m[k], ft)...)
		}
		return errs
	case t.Kind() == reflect.Map:
		m, ok := val.(map[string]any)
		if !ok {
			return bad("must be a mapping, got %s", kind(val))
		}
		var errs []error
		for _, k := range slices.Sorted(maps.Keys(m)) {
			errs = append(errs, checkShape(join(path, k), m[k], t.Elem())...)
		}
		return errs
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		switch l := val.(type) {
		case string, []string:
		case []any:
			for i, e := range l {
				if !isStringish(e) {
					return bad("must be a list of strings, got %s at [%d]", show(e), i)
				}
			}
		default:
			return bad("must be a list of strings, got %s", kind(val))
		}
	case t.Kind() == reflect.Slice:
		l, ok := val.([]any)
		if !ok {
			return bad("must be a list, got %s", kind(val))
		}
		var errs []error
		for i, e := range l {
			errs = append(errs, checkShape(fmt.Sprintf("%s[%d]", path, i), e, t.Elem())...)
		}
		return errs
	case t.Kind() == reflect.String:
		if !isStringish(val) {
			return bad("must be a string, got %s", show(val))
		}
	case t.Kind() == reflect.Bool:
		ok := false
		switch b := val.(type) {
		case bool:
			ok = true
		case string:
			_, err := strconv.ParseBool(b)
			ok = err == nil
		}
		if !ok {
			return bad("must be true or false, got %s", show(val))
		}
	case t.Kind() == reflect.Int64:
		ok := false
		switch n := val.(type) {
		case int, int64:
			ok = true
		case uint64:
			ok = n <= math.MaxInt64
		case float64:
			ok = n == math.Trunc(n) && math.Abs(n) < 1<<63
		}
		if !ok {
			return bad("must be an integer, got %s", show(val))
		}
	case t.Kind() == reflect.Float64:
		switch n := val.(type) {
		case int, int64, uint64:
		case float64:
			if math.IsNaN(n) || math.IsInf(n, 0) {
				return bad("must be a number, got %s", show(val))
			}
		default:
			return bad("must be a number, got %s", show(val))
		}
	default:
		return bad("unsupported type %s", t) // a new field type in Config
	}
	return nil
}

// isStringish reports whether v decodes into a string: a string or a number.
func isStringish(v any) bool {
	switch v.(type) {
	case string, int, int64, uint64, float64:
		return true
	}
	return false
}

// toDuration reads a Go duration string; a bare number must be 0.
func toDuration(v any) (time.Duration, error) {
	switch d := v.(type) {
	case time.Duration:
		return d, nil
	case string:
		p, err := time.ParseDuration(strings.TrimSpace(d))
		if err != nil {
			return 0, fmt.Errorf("invalid duration %s", showString(d))
		}
		return p, nil
	case int, int64, uint64, float64:
		if reflect.ValueOf(d).IsZero() {
			return 0, nil
		}
		return 0, fmt.Errorf("invalid duration %v: add a unit, as in \"%vms\" or \"%vs\"", d, d, d)
	}
	return 0, fmt.Errorf("invalid duration %s", show(v))
}

// decodeHook converts strings (YAML or environment) into durations and
// comma-separated lists. checkShape has already vetted them.
func decodeHook(_, to reflect.Type, data any) (any, error) {
	s, ok := data.(string)
	switch {
	case !ok:
		return data, nil
	case to == durationType:
		return toDuration(s)
	case to.Kind() == reflect.Slice && to.Elem().Kind() == reflect.String:
		var out []string
		for e := range strings.SplitSeq(s, ",") {
			if e = strings.TrimSpace(e); e != "" {
				out = append(out, e)
			}
		}
		return out, nil
	}
	return data, nil
}

// show renders a YAML value for an error message about a scalar key:
// a string through showString, since it may hold a secret.
func show(v any) string {
	if s, ok := v.(string); ok {
		return showString(s)
	}
	return kind(v)
}

// kind renders a YAML value for an error message about a section or a
// list: what it is, and a string not at all. A string where a section
// belongs is most often a DSN or a token one level too high
// (database: "postgres://user:password@..."), and these messages reach
// the log and, on a refused reload, the unauthenticated /health.
func kind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		return "a string"
	}
	return fmt.Sprint(v)
}

// showString quotes a string for an error message without a secret it
// may hold: a URL loses its user info (a password, or a token given as
// the user name) and its query (libpq takes ?password=), and a string that may hold a secret otherwise (a URL
// that does not parse, a key=value DSN, anything with "@") is not
// shown at all.
func showString(s string) string {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "a URL that does not parse (not shown)"
		}
		if u.User != nil {
			u.User = url.User("xxxxx")
		}
		if u.RawQuery != "" || u.Fragment != "" { // ?password=... is a DSN's too
			u.RawQuery, u.Fragment = "xxxxx", ""
		}
		return strconv.Quote(u.String())
	}
	if strings.Contains(s, "@") || strings.Contains(strings.ToLower(s), "password") {
		return "a string that may hold a secret (not shown)"
	}
	return strconv.Quote(s)
}

// join appends key k to path.
func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// suggest returns ` (did you mean "x"?)` when a known key is close to k.
func suggest(k string, known []string) string {
	slices.Sort(known)
	best, bestD := "", 3 // at most 2 edits
	for _, c := range known {
		if d := editDistance(k, c); d < bestD && d < len(c) {
			best, bestD = c, d
		}
	}
	for _, c := range known { // "flush" for "flush_interval"
		if best == "" && len(k) >= 4 && strings.HasPrefix(c, k) {
			best = c
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// foldedTwice reports plans and users named twice in data, in spellings
// that differ only in case. Their names are case-insensitive, and viper
// folds map keys to lower case as it reads, so one of the two would
// silently win. data that does not parse is left to viper to report.
func foldedTwice(data []byte) []error {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	var errs []error
	top := doc.Content[0].Content
	for i := 0; i+1 < len(top); i += 2 {
		section := strings.ToLower(top[i].Value)
		if (section != "plans" && section != "users") || top[i+1].Kind != yaml.MappingNode {
			continue
		}
		seen := map[string]string{}
		m := top[i+1].Content
		for j := 0; j+1 < len(m); j += 2 {
			name := m[j].Value
			if first, dup := seen[strings.ToLower(name)]; dup && first != name {
				errs = append(errs, fmt.Errorf("%s.%s (line %d): names the same %s as %s.%s: names are case-insensitive", section, name, m[j].Line, strings.TrimSuffix(section, "s"), section, first))
				continue
			}
			seen[strings.ToLower(name)] = name
		}
	}
	return errs
}
