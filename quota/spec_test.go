package quota_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

func TestSpecJSON(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	for _, tc := range []struct {
		spec  limiter.Spec
		json  string
		quota bool
	}{
		{limiter.Spec{Name: "burst", Limit: 10, Window: time.Second}, `{"name":"burst","limit":10,"window":"1s"}`, false},
		{limiter.Spec{Limit: 300, Window: 90 * time.Second, Scope: limiter.ScopeGlobal}, `{"limit":300,"window":"90s","scope":"global"}`, false},
		{limiter.Spec{Limit: 10000, Period: quota.Calendar{Unit: quota.Daily, Loc: paris}, Scope: limiter.ScopeUser, Shadow: true, Refundable: true},
			`{"limit":10000,"period":"daily","scope":"user","shadow":true,"count":"success"}`, true},
	} {
		b, err := json.Marshal(quota.EncodeSpec(tc.spec))
		if err != nil || string(b) != tc.json {
			t.Errorf("EncodeSpec(%v): got %s, %v, want %s", tc.spec, b, err, tc.json)
		}
		var j quota.SpecJSON
		if err := json.Unmarshal([]byte(tc.json), &j); err != nil {
			t.Fatal(err)
		}
		if got, err := j.Spec(tc.quota, paris); err != nil || !reflect.DeepEqual(got, tc.spec) {
			t.Errorf("Spec(%s): got %+v, %v, want %+v", tc.json, got, err, tc.spec)
		}
	}
	j := quota.SpecJSON{Limit: 5, Period: "monthly", Count: "admitted"}
	if sp, err := j.Spec(true, nil); err != nil || sp.Refundable || sp.Period != (quota.Calendar{Unit: quota.Monthly}) {
		t.Errorf("Spec(%+v): got %+v, %v", j, sp, err)
	}
}

func TestDecodeList(t *testing.T) {
	list := []quota.SpecJSON{{Limit: 10, Window: "1s"}, {Limit: 5, Window: "48h"}}
	_, err := quota.DecodeList("rate", list, nil)
	var ie *quota.InvalidError
	if !errors.As(err, &ie) || !errors.Is(err, quota.ErrInvalid) || ie.Field != "rate[1].window" || ie.Reason != `must be between 1s and 24h, got "48h"` {
		t.Errorf("DecodeList: got %v, want rate[1].window named", err)
	}
	if specs, err := quota.DecodeList("quota", nil, nil); specs != nil || err != nil {
		t.Errorf("DecodeList(nil) = %v, %v, want nil (inherit)", specs, err)
	}
	if specs, err := quota.DecodeLimits("quota", []byte("null"), nil); specs != nil || err != nil {
		t.Errorf("DecodeLimits(null) = %v, %v, want nil (inherit)", specs, err)
	}
	if specs, err := quota.DecodeLimits("rate", []byte("[]"), nil); specs == nil || len(specs) != 0 || err != nil {
		t.Errorf("DecodeLimits([]) = %#v, %v, want empty (none)", specs, err)
	}
}

// TestCheckSubject: a user subject follows the proxy's rule for user ids
// (internal/credential), so no rule names a user the proxy could never
// meet.
func TestCheckSubject(t *testing.T) {
	long := make([]byte, 257)
	for i := range long {
		long[i] = 'u'
	}
	for _, tc := range []struct {
		subject string
		ok      bool
	}{
		{"user:alice", true},
		{"user:josé", true},
		{"user:Alice Smith", true},
		{"user:" + string(long[:256]), true},
		{"key:acme-prod", true},
		{"plan:free", true},
		{"user:" + string(long), false},
		{"user: alice", false},
		{"user:a\tb", false},
		{"user:", false},
		{"team:x", false},
	} {
		if err := quota.CheckSubject(tc.subject); (err == nil) != tc.ok {
			t.Errorf("CheckSubject(%.40q): %v, want ok %v", tc.subject, err, tc.ok)
		}
	}
}

// TestDecodeListCaps: a list holds at most quota.MaxLimits limits, and a
// name at most quota.MaxNameBytes, since every response to the subject
// carries them all in RateLimit-Policy; the errors name the field.
// EncodeRule refuses what DecodeList does, yet a list a store wrote
// before the caps still loads.
func TestDecodeListCaps(t *testing.T) {
	windows := func(n int) []quota.SpecJSON {
		list := make([]quota.SpecJSON, n)
		for i := range list {
			list[i] = quota.SpecJSON{Limit: 10, Window: fmt.Sprintf("%ds", i+1)}
		}
		return list
	}
	named := func(name string) []quota.SpecJSON { return []quota.SpecJSON{{Name: name, Limit: 10, Window: "1s"}} }
	for _, tc := range []struct {
		name string
		list []quota.SpecJSON
		want string // "": valid
	}{
		{"16 windows", windows(quota.MaxLimits), ""},
		{"17 windows", windows(quota.MaxLimits + 1), "rate: at most 16 limits, got 17"},
		{"2000 windows", windows(2000), "rate: at most 16 limits, got 2000"},
		{"64-byte name", named(strings.Repeat("n", quota.MaxNameBytes)), ""},
		{"64-byte name of 32 runes", named(strings.Repeat("é", 32)), ""},
		{"65-byte name", named(strings.Repeat("n", 65)), "rate[0].name: at most 64 bytes, got 65"},
		{"500,000-byte name", named(strings.Repeat("n", 500000)), "rate[0].name: at most 64 bytes, got 500000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := quota.DecodeList("rate", tc.list, nil)
			if got := fmt.Sprint(err); tc.want == "" && err != nil || tc.want != "" && (!errors.Is(err, quota.ErrInvalid) || got != "invalid rule: "+tc.want) {
				t.Errorf("DecodeList: got %v, want %q", err, tc.want)
			}
			b, err := json.Marshal(tc.list)
			if err != nil {
				t.Fatal(err)
			}
			specs, err := quota.DecodeLimits("rate", b, nil)
			if err != nil || len(specs) != len(tc.list) {
				t.Fatalf("DecodeLimits of a stored list: %d specs, %v; want %d", len(specs), err, len(tc.list))
			}
			_, _, err = quota.EncodeRule(limiter.Rule{Subject: "user:alice", Limits: limiter.Limits{Rate: specs}})
			if got := fmt.Sprint(err); tc.want == "" && err != nil || tc.want != "" && got != "invalid rule: "+tc.want {
				t.Errorf("EncodeRule: got %v, want %q", err, tc.want)
			}
		})
	}
	_, err := quota.DecodeList("quota", make([]quota.SpecJSON, 17), nil)
	if got := fmt.Sprint(err); got != "invalid rule: quota: at most 16 limits, got 17" {
		t.Errorf("DecodeList of 17 quotas: got %v, want the count named", err)
	}
}
