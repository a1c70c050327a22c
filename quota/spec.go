package quota

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gaia-proxy/gaia-proxy/internal/credential"
	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// ErrInvalid reports a rule or limit that is refused: an unknown subject
// form, or a limit out of range. Errors wrapping it are *InvalidError.
var ErrInvalid = errors.New("invalid rule")

// InvalidError is an ErrInvalid naming its field by its path
// ("quota[0].period") and saying why.
type InvalidError struct{ Field, Reason string }

// Error returns "invalid rule: <field>: <reason>".
func (e *InvalidError) Error() string { return "invalid rule: " + e.Field + ": " + e.Reason }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &InvalidError{field, fmt.Sprintf(format, args...)}
}

// Caps on what a runtime rule or a config may hold. Every response to a
// subject lists all its limits, names included, in RateLimit-Policy;
// clients and front proxies refuse header lines past a few KiB to 64 KiB
// (Python's http.client at 64 KiB), so a subject with hundreds of limits,
// or one with a name of thousands of bytes, could no longer be served.
// Sixteen limits of 64-byte names keep a list's share of the header under
// 2.5 KiB, escapes included.
const (
	// MaxNameBytes is the longest name of a limit, in bytes.
	MaxNameBytes = 64
	// MaxLimits is the most limits a rate or a quota list may hold.
	MaxLimits = 16
)

// SpecJSON is the JSON form of a limiter.Spec, as the YAML writes it, as
// the stores keep runtime rules and as the admin API shows limits:
// {"name":"burst","limit":10,"window":"1s"} or
// {"limit":10000,"period":"daily","scope":"user","count":"success"}.
type SpecJSON struct {
	Name   string `json:"name,omitempty"`
	Limit  int64  `json:"limit"`
	Window string `json:"window,omitempty"` // rate limits: "1s" to "24h"
	Period string `json:"period,omitempty"` // quotas: hourly, daily, weekly, monthly
	Scope  string `json:"scope,omitempty"`  // key, user, global; "" is the default
	Shadow bool   `json:"shadow,omitempty"`
	Count  string `json:"count,omitempty"` // quotas: admitted (default) or success
}

// EncodeSpec returns the JSON form of sp.
func EncodeSpec(sp limiter.Spec) SpecJSON {
	j := SpecJSON{Name: sp.Name, Limit: sp.Limit, Shadow: sp.Shadow}
	if sp.Period != nil {
		j.Period = sp.Period.String()
	} else {
		j.Window = limiter.FormatWindow(sp.Window)
	}
	if sp.Scope != limiter.ScopeDefault {
		j.Scope = sp.Scope.String()
	}
	if sp.Refundable {
		j.Count = "success"
	}
	return j
}

// Spec checks j as a rate limit (isQuota false) or a quota and returns
// it as a limiter.Spec whose period is a Calendar in loc (nil means
// UTC). A name may have at most MaxNameBytes. Errors are *InvalidError
// naming the field.
func (j SpecJSON) Spec(isQuota bool, loc *time.Location) (limiter.Spec, error) {
	return j.spec(isQuota, loc, true)
}

// spec is Spec; capped false lets a name be longer than MaxNameBytes (see
// DecodeLimits).
func (j SpecJSON) spec(isQuota bool, loc *time.Location, capped bool) (limiter.Spec, error) {
	bad := func(field, format string, args ...any) (limiter.Spec, error) {
		return limiter.Spec{}, invalid(field, format, args...)
	}
	sp := limiter.Spec{Name: j.Name, Limit: j.Limit, Shadow: j.Shadow}
	if !credential.IsText(j.Name) {
		return bad("name", "must be UTF-8 text without control characters")
	}
	if capped && len(j.Name) > MaxNameBytes {
		return bad("name", "at most %d bytes, got %d", MaxNameBytes, len(j.Name))
	}
	if j.Limit < 1 || j.Limit > limiter.MaxLimit {
		return bad("limit", "must be between 1 and %d, got %d", limiter.MaxLimit, j.Limit)
	}
	if isQuota {
		if j.Window != "" {
			return bad("window", "a quota has a period, not a window, got %q", j.Window)
		}
		p, err := ParsePeriod(j.Period, loc)
		if err != nil {
			return bad("period", "must be hourly, daily, weekly or monthly, got %q", j.Period)
		}
		sp.Period = p
	} else {
		if j.Period != "" {
			return bad("period", "a rate limit has a window, not a period, got %q", j.Period)
		}
		w, err := time.ParseDuration(j.Window)
		if err != nil || w < limiter.MinWindow || w > limiter.MaxWindow {
			return bad("window", "must be between %s and %s, got %q", limiter.FormatWindow(limiter.MinWindow), limiter.FormatWindow(limiter.MaxWindow), j.Window)
		}
		sp.Window = w
	}
	switch j.Scope {
	case "":
	case "key":
		sp.Scope = limiter.ScopeKey
	case "user":
		sp.Scope = limiter.ScopeUser
	case "global":
		sp.Scope = limiter.ScopeGlobal
	default:
		return bad("scope", "must be key, user or global, got %q", j.Scope)
	}
	switch {
	case j.Count == "" || j.Count == "admitted":
	case j.Count == "success" && isQuota:
		sp.Refundable = true
	case j.Count == "success":
		return bad("count", `"success" applies only to quotas`)
	default:
		return bad("count", "must be admitted or success, got %q", j.Count)
	}
	return sp, nil
}

// EncodeList returns the JSON form of a rate or quota list; nil (inherit)
// stays nil, an empty list (none) stays empty.
func EncodeList(specs []limiter.Spec) []SpecJSON {
	if specs == nil {
		return nil
	}
	list := make([]SpecJSON, len(specs))
	for i, sp := range specs {
		list[i] = EncodeSpec(sp)
	}
	return list
}

// DecodeList checks a rate or quota list (field "rate" or "quota") and
// returns its specs, quota periods in loc; nil stays nil. A list holds
// one limit per window or period, and at most MaxLimits. Errors are
// *InvalidError naming the field by its path ("rate[1].window").
func DecodeList(field string, list []SpecJSON, loc *time.Location) ([]limiter.Spec, error) {
	return decodeList(field, list, loc, true)
}

// decodeList is DecodeList; capped false lifts the caps (MaxLimits,
// MaxNameBytes).
func decodeList(field string, list []SpecJSON, loc *time.Location, capped bool) ([]limiter.Spec, error) {
	if list == nil {
		return nil, nil
	}
	if capped && len(list) > MaxLimits {
		return nil, invalid(field, "at most %d limits, got %d", MaxLimits, len(list))
	}
	specs := make([]limiter.Spec, len(list))
	seen := map[string]int{}
	for i, j := range list {
		sp, err := j.spec(field == "quota", loc, capped)
		if err != nil {
			var ie *InvalidError
			if !errors.As(err, &ie) {
				return nil, err
			}
			return nil, invalid(fmt.Sprintf("%s[%d].%s", field, i, ie.Field), "%s", ie.Reason)
		}
		slot := j.Period + "/" + limiter.FormatWindow(sp.Window)
		if k, dup := seen[slot]; dup {
			return nil, invalid(fmt.Sprintf("%s[%d]", field, i), "duplicates %s[%d]: one limit per window or period", field, k)
		}
		seen[slot] = i
		specs[i] = sp
	}
	return specs, nil
}

// CheckSubject checks the subject of a runtime rule: "key:<id>",
// "user:<id>" or "plan:<name>".
func CheckSubject(subject string) error {
	kind, id, _ := strings.Cut(subject, ":")
	switch {
	case !credential.IsText(subject):
		return invalid("subject", "must be UTF-8 text without control characters")
	case id == "" || (kind != "key" && kind != "user" && kind != "plan"):
		// At most 64 characters of it: the message may go back to a client.
		return invalid("subject", "must be key:<id>, user:<id> or plan:<name>, got %.64q", subject)
	case kind == "user":
		// An id the proxy would never take from a user header names no
		// one it could meet.
		if err := credential.CheckUserID(id); err != nil {
			return invalid("subject", "user id %s", err)
		}
	}
	return nil
}

// EncodeRule checks r's subject and limits and returns its rate and
// quota lists in JSON, as stores keep them; a nil list (inherit) is nil.
// Errors wrap ErrInvalid and name the field.
func EncodeRule(r limiter.Rule) (rate, quota []byte, err error) {
	if err := CheckSubject(r.Subject); err != nil {
		return nil, nil, err
	}
	for _, list := range []struct {
		field string
		specs []limiter.Spec
		dst   *[]byte
	}{{"rate", r.Limits.Rate, &rate}, {"quota", r.Limits.Quota, &quota}} {
		j := EncodeList(list.specs)
		if _, err := DecodeList(list.field, j, nil); err != nil { // what is stored must load
			return nil, nil, err
		}
		if j != nil {
			if *list.dst, err = json.Marshal(j); err != nil {
				return nil, nil, err
			}
		}
	}
	return rate, quota, nil
}

// DecodeLimits reads a rate or quota list that EncodeRule wrote, quota
// periods in loc; nil or JSON null is a nil list (inherit). It checks the
// list as DecodeList does but for the caps (MaxLimits, MaxNameBytes): a
// rule stored before them still loads, so that it neither keeps every
// other rule from loading nor resists its deletion.
func DecodeLimits(field string, b []byte, loc *time.Location) ([]limiter.Spec, error) {
	if b == nil {
		return nil, nil
	}
	var list []SpecJSON
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return decodeList(field, list, loc, false)
}

// NewRuleID returns a new rule id: "rule_" and 16 hex digits.
func NewRuleID() string {
	b := make([]byte, 8)
	rand.Read(b) // never fails (crypto/rand)
	return "rule_" + hex.EncodeToString(b)
}
