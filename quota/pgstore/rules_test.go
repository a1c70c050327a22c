package pgstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
	"github.com/gaia-proxy/gaia-proxy/quota/pgstore"
)

var paris = time.FixedZone("CET", 3600)

func daily(loc *time.Location) quota.Calendar { return quota.Calendar{Unit: quota.Daily, Loc: loc} }

func sameRule(t *testing.T, what string, got, want limiter.Rule) {
	t.Helper()
	if got.ID != want.ID || got.Subject != want.Subject || !got.ExpiresAt.Equal(want.ExpiresAt) ||
		!reflect.DeepEqual(got.Limits, want.Limits) {
		t.Errorf("%s:\ngot  %+v\nwant %+v", what, got, want)
	}
}

func TestRules(t *testing.T) {
	ctx := context.Background()
	s := pgStore(t)
	if rules, err := s.Rules(ctx, paris); err != nil || len(rules) != 0 {
		t.Fatalf("Rules on an empty store: got %v, %v", rules, err)
	}
	acme := limiter.Rule{Subject: "key:acme", Limits: limiter.Limits{Rate: []limiter.Spec{{Limit: 20, Window: time.Second}}}}
	alice := limiter.Rule{
		Subject: "user:alice",
		Limits: limiter.Limits{
			Rate: []limiter.Spec{}, // none, unlike nil (inherit)
			Quota: []limiter.Spec{{Name: "alice-daily", Limit: 1000, Period: daily(paris),
				Scope: limiter.ScopeUser, Shadow: true, Refundable: true}},
		},
		ExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 6789, paris),
	}
	expired := limiter.Rule{Subject: "plan:free", ExpiresAt: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)}
	id := regexp.MustCompile(`^rule_[0-9a-f]{16}$`)
	var stored []limiter.Rule
	for _, r := range []limiter.Rule{acme, alice, expired} {
		got, err := s.PutRule(ctx, r)
		if err != nil {
			t.Fatalf("PutRule(%s): %v", r.Subject, err)
		}
		if !id.MatchString(got.ID) {
			t.Errorf("PutRule(%s): id %q, want rule_ and 16 hex digits", r.Subject, got.ID)
		}
		r.ID = got.ID
		r.ExpiresAt = r.ExpiresAt.Truncate(time.Microsecond) // PostgreSQL keeps microseconds
		sameRule(t, "PutRule("+r.Subject+")", got, r)
		stored = append(stored, got)
	}
	rules, err := s.Rules(ctx, paris)
	if err != nil || len(rules) != 3 {
		t.Fatalf("Rules: got %d rules, %v, want 3", len(rules), err)
	}
	for i, want := range []limiter.Rule{stored[0], stored[2], stored[1]} { // by subject
		sameRule(t, "Rules()["+want.Subject+"]", rules[i], want)
	}
	if rules[1].Limits.Rate != nil || rules[1].Limits.Quota != nil {
		t.Errorf("rule with nil lists: got %+v, want nil lists (inherit)", rules[1].Limits)
	}
	if rules[2].Limits.Rate == nil {
		t.Error("rule with an empty rate list: got nil (inherit), want empty (none)")
	}
	if utc, _ := s.Rules(ctx, nil); utc[2].Limits.Quota[0].Period != daily(nil) {
		t.Errorf("Rules(nil location): period %#v, want daily in UTC", utc[2].Limits.Quota[0].Period)
	}

	// An update by subject keeps the id.
	acme.Limits.Rate = []limiter.Spec{{Limit: 5, Window: time.Minute, Scope: limiter.ScopeGlobal}}
	got, err := s.PutRule(ctx, acme)
	if err != nil {
		t.Fatal(err)
	}
	acme.ID = stored[0].ID
	sameRule(t, "PutRule update", got, acme)
	if rules, _ := s.Rules(ctx, paris); len(rules) != 3 {
		t.Errorf("after an update: got %d rules, want 3", len(rules))
	} else {
		sameRule(t, "Rules after update", rules[0], acme)
	}

	if ok, err := s.DeleteRule(ctx, acme.ID); !ok || err != nil {
		t.Errorf("DeleteRule: got %v, %v, want true, nil", ok, err)
	}
	if ok, err := s.DeleteRule(ctx, acme.ID); ok || err != nil {
		t.Errorf("DeleteRule again: got %v, %v, want false, nil", ok, err)
	}
	if rules, _ := s.Rules(ctx, paris); len(rules) != 2 || rules[0].Subject != "plan:free" {
		t.Errorf("after DeleteRule: got %+v", rules)
	}
}

type yearly struct{ quota.Calendar }

func (yearly) String() string { return "yearly" }

func TestPutRuleInvalid(t *testing.T) {
	ctx := context.Background()
	s := pgStore(t)
	rate := func(sp ...limiter.Spec) limiter.Rule {
		return limiter.Rule{Subject: "key:k", Limits: limiter.Limits{Rate: sp}}
	}
	quotas := func(sp ...limiter.Spec) limiter.Rule {
		return limiter.Rule{Subject: "key:k", Limits: limiter.Limits{Quota: sp}}
	}
	sec := limiter.Spec{Limit: 1, Window: time.Second}
	for _, tc := range []struct {
		name string
		rule limiter.Rule
		want string
	}{
		{"ip subject", limiter.Rule{Subject: "ip:127.0.0.1"}, `subject: must be key:<id>, user:<id> or plan:<name>, got "ip:127.0.0.1"`},
		{"empty id", limiter.Rule{Subject: "user:"}, "subject: must be"},
		{"zero limit", rate(sec, limiter.Spec{Window: time.Minute}), "rate[1].limit: must be between 1 and 1000000000, got 0"},
		{"short window", rate(limiter.Spec{Limit: 1, Window: 500 * time.Millisecond}), `rate[0].window: must be a duration from 1s to 24h, got "500ms"`},
		{"long window", rate(limiter.Spec{Limit: 1, Window: 25 * time.Hour}), `rate[0].window: must be a duration from 1s to 24h, got "25h"`},
		{"rate with period", rate(limiter.Spec{Limit: 1, Period: daily(nil)}), `rate[0].period: a rate limit has a window, not a period, got "daily"`},
		{"quota with window", quotas(sec), `quota[0].window: a quota has a period, not a window, got "1s"`},
		{"unknown period", quotas(limiter.Spec{Limit: 1, Period: yearly{}}), `quota[0].period: must be hourly, daily, weekly or monthly, got "yearly"`},
		{"unknown scope", rate(limiter.Spec{Limit: 1, Window: time.Second, Scope: 9}), `rate[0].scope: must be key, user or global, got "default"`},
		{"refundable rate", rate(limiter.Spec{Limit: 1, Window: time.Second, Refundable: true}), `rate[0].count: "success" applies only to quotas`},
		{"duplicate window", rate(sec, limiter.Spec{Limit: 2, Window: time.Second}), "rate[1]: duplicates rate[0]: one limit per window or period"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.PutRule(ctx, tc.rule)
			if !errors.Is(err, pgstore.ErrInvalid) || !strings.Contains(err.Error(), "invalid rule: "+tc.want) {
				t.Errorf("got %v, want ErrInvalid with %q", err, tc.want)
			}
		})
	}
	if rules, err := s.Rules(ctx, nil); err != nil || len(rules) != 0 {
		t.Errorf("after refused rules: got %d stored, %v", len(rules), err)
	}
}

func TestSpecJSON(t *testing.T) {
	for _, tc := range []struct {
		spec  limiter.Spec
		json  string
		quota bool
	}{
		{limiter.Spec{Name: "burst", Limit: 10, Window: time.Second}, `{"name":"burst","limit":10,"window":"1s"}`, false},
		{limiter.Spec{Limit: 300, Window: 90 * time.Second, Scope: limiter.ScopeGlobal}, `{"limit":300,"window":"90s","scope":"global"}`, false},
		{limiter.Spec{Limit: 10000, Period: daily(paris), Scope: limiter.ScopeUser, Shadow: true, Refundable: true},
			`{"limit":10000,"period":"daily","scope":"user","shadow":true,"count":"success"}`, true},
	} {
		b, err := json.Marshal(pgstore.EncodeSpec(tc.spec))
		if err != nil || string(b) != tc.json {
			t.Errorf("EncodeSpec(%v): got %s, %v, want %s", tc.spec, b, err, tc.json)
		}
		var j pgstore.SpecJSON
		if err := json.Unmarshal([]byte(tc.json), &j); err != nil {
			t.Fatal(err)
		}
		if got, err := j.Spec(tc.quota, paris); err != nil || !reflect.DeepEqual(got, tc.spec) {
			t.Errorf("Spec(%s): got %+v, %v, want %+v", tc.json, got, err, tc.spec)
		}
	}
	j := pgstore.SpecJSON{Limit: 5, Period: "monthly", Count: "admitted"}
	if sp, err := j.Spec(true, nil); err != nil || sp.Refundable || sp.Period != (quota.Calendar{Unit: quota.Monthly}) {
		t.Errorf("Spec(%+v): got %+v, %v", j, sp, err)
	}
}

// waitChange waits for a call of onChange; 2 s is a timeout, not a speed.
func waitChange(t *testing.T, changes <-chan struct{}, after string) {
	t.Helper()
	select {
	case <-changes:
	case <-time.After(2 * time.Second):
		t.Fatalf("onChange was not called within 2s after %s", after)
	}
}

// watch runs s.WatchRules until the test ends and returns its onChange
// calls.
func watch(t *testing.T, s *pgstore.Store) <-chan struct{} {
	ctx, cancel := context.WithCancel(context.Background())
	changes := make(chan struct{}, 16)
	done := make(chan error, 1)
	s.Logf = t.Logf
	go func() {
		done <- s.WatchRules(ctx, func() {
			select {
			case changes <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("WatchRules: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("WatchRules did not return within 5s of its context ending")
		}
	})
	waitChange(t, changes, "connecting")
	return changes
}

func TestWatchRules(t *testing.T) {
	ctx := context.Background()
	url := testenv.Schema(t)
	a := pgStoreOn(t, url)
	b := pgstore.New(pgPool(t, url))
	changes := watch(t, b)

	r, err := a.PutRule(ctx, limiter.Rule{Subject: "plan:free", Limits: limiter.Limits{Rate: []limiter.Spec{{Limit: 3, Window: time.Second}}}})
	if err != nil {
		t.Fatal(err)
	}
	waitChange(t, changes, "PutRule")
	if rules, err := b.Rules(ctx, nil); err != nil || len(rules) != 1 || rules[0].ID != r.ID {
		t.Errorf("Rules after the change: got %+v, %v", rules, err)
	}
	if _, err := a.DeleteRule(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	waitChange(t, changes, "DeleteRule")
	if rules, err := b.Rules(ctx, nil); err != nil || len(rules) != 0 {
		t.Errorf("Rules after the deletion: got %+v, %v", rules, err)
	}
}

// TestWatchRulesReconnect: a watcher whose connection is killed comes
// back, reports a change (it may have missed some), and hears again.
func TestWatchRulesReconnect(t *testing.T) {
	ctx := context.Background()
	url := testenv.Schema(t)
	app := strings.TrimPrefix(url[strings.LastIndex(url, "=")+1:], "test_") + "_watcher"
	a := pgStoreOn(t, url)
	b := pgstore.New(pgPool(t, url+"&application_name="+app)) // used for its config only
	changes := watch(t, b)

	var killed int
	err := pgPool(t, url).QueryRow(ctx,
		"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminate the watcher's connection: killed %d, %v", killed, err)
	}
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("onChange was not called within 5s of the connection dying")
	}
	if _, err := a.PutRule(ctx, limiter.Rule{Subject: "plan:free"}); err != nil {
		t.Fatal(err)
	}
	waitChange(t, changes, "PutRule on the new connection")
}
