package pgstore

import (
	"errors"
	"fmt"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// ErrInvalid reports a rule the store refuses: an unknown subject form,
// or a limit out of range. Its message names the field
// ("quota[0].period: ...").
var ErrInvalid = errors.New("invalid rule")

// invalidError is an ErrInvalid naming its field.
type invalidError struct{ field, reason string }

func (e *invalidError) Error() string        { return "invalid rule: " + e.field + ": " + e.reason }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &invalidError{field, fmt.Sprintf(format, args...)}
}

// maxLimit is the largest limit a rule may set, as in the configuration.
const maxLimit = 1_000_000_000

// SpecJSON is the JSON form of a limiter.Spec, as stored in the rate and
// quota columns of rate_limit_configs and as the YAML writes it:
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
// it as a limiter.Spec whose period is a quota.Calendar in loc (nil
// means UTC). Errors wrap ErrInvalid and name the field.
func (j SpecJSON) Spec(isQuota bool, loc *time.Location) (limiter.Spec, error) {
	bad := func(field, format string, args ...any) (limiter.Spec, error) {
		return limiter.Spec{}, invalid(field, format, args...)
	}
	sp := limiter.Spec{Name: j.Name, Limit: j.Limit, Shadow: j.Shadow}
	if j.Limit < 1 || j.Limit > maxLimit {
		return bad("limit", "must be between 1 and %d, got %d", maxLimit, j.Limit)
	}
	if isQuota {
		if j.Window != "" {
			return bad("window", "a quota has a period, not a window, got %q", j.Window)
		}
		p, err := quota.ParsePeriod(j.Period, loc)
		if err != nil {
			return bad("period", "must be hourly, daily, weekly or monthly, got %q", j.Period)
		}
		sp.Period = p
	} else {
		if j.Period != "" {
			return bad("period", "a rate limit has a window, not a period, got %q", j.Period)
		}
		w, err := time.ParseDuration(j.Window)
		if err != nil || w < time.Second || w > 24*time.Hour {
			return bad("window", "must be a duration from 1s to 24h, got %q", j.Window)
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

// encodeList returns the JSON form of a rate or quota list; nil (inherit)
// stays nil, an empty list (none) becomes empty.
func encodeList(specs []limiter.Spec) []SpecJSON {
	if specs == nil {
		return nil
	}
	list := make([]SpecJSON, len(specs))
	for i, sp := range specs {
		list[i] = EncodeSpec(sp)
	}
	return list
}

// decodeList checks a rate or quota list (field "rate" or "quota") and
// returns its specs; nil stays nil. One limit per window or period.
func decodeList(field string, list []SpecJSON, loc *time.Location) ([]limiter.Spec, error) {
	if list == nil {
		return nil, nil
	}
	specs := make([]limiter.Spec, len(list))
	seen := map[string]int{}
	for i, j := range list {
		sp, err := j.Spec(field == "quota", loc)
		var ie *invalidError
		if errors.As(err, &ie) { // name the field by its path
			return nil, invalid(fmt.Sprintf("%s[%d].%s", field, i, ie.field), "%s", ie.reason)
		} else if err != nil {
			return nil, err
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
