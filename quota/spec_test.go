package quota_test

import (
	"encoding/json"
	"errors"
	"reflect"
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
