package quotatest

import (
	"context"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// Rules is what RunRules tests: a store of runtime rules.
type Rules interface {
	Rules(ctx context.Context, loc *time.Location) ([]limiter.Rule, error)
	PutRule(ctx context.Context, r limiter.Rule) (limiter.Rule, error)
	DeleteRule(ctx context.Context, id string) (bool, error)
	WatchRules(ctx context.Context, onChange func()) error
}

// RunRules runs the contract of runtime rules: one rule per subject,
// generated ids, limits kept in their JSON form (nil lists inherit, empty
// ones mean none), invalid rules refused with the field named, and
// WatchRules hearing of every change. newStore returns an empty store
// for one subtest and registers its cleanup with t.
func RunRules(t *testing.T, newStore func(t *testing.T) Rules) {
	ctx := context.Background()
	paris := time.FixedZone("CET", 3600)
	daily := func(loc *time.Location) quota.Calendar { return quota.Calendar{Unit: quota.Daily, Loc: loc} }
	same := func(t *testing.T, what string, got, want limiter.Rule) {
		t.Helper()
		if got.ID != want.ID || got.Subject != want.Subject || !got.ExpiresAt.Equal(want.ExpiresAt) ||
			!reflect.DeepEqual(got.Limits, want.Limits) {
			t.Errorf("%s:\ngot  %+v\nwant %+v", what, got, want)
		}
	}

	t.Run("PutUpdateDelete", func(t *testing.T) {
		s := newStore(t)
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
			r.ExpiresAt = r.ExpiresAt.Truncate(time.Microsecond) // as PostgreSQL keeps it
			same(t, "PutRule("+r.Subject+")", got, r)
			stored = append(stored, got)
		}
		rules, err := s.Rules(ctx, paris)
		if err != nil || len(rules) != 3 {
			t.Fatalf("Rules: got %d rules, %v, want 3", len(rules), err)
		}
		for i, want := range []limiter.Rule{stored[0], stored[2], stored[1]} { // by subject
			same(t, "Rules()["+want.Subject+"]", rules[i], want)
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
		same(t, "PutRule update", got, acme)
		if rules, _ := s.Rules(ctx, paris); len(rules) != 3 {
			t.Errorf("after an update: got %d rules, want 3", len(rules))
		} else {
			same(t, "Rules after update", rules[0], acme)
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
	})

	t.Run("Invalid", func(t *testing.T) {
		s := newStore(t)
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
			{"short window", rate(limiter.Spec{Limit: 1, Window: 500 * time.Millisecond}), `rate[0].window: must be between 1s and 24h, got "500ms"`},
			{"long window", rate(limiter.Spec{Limit: 1, Window: 25 * time.Hour}), `rate[0].window: must be between 1s and 24h, got "25h"`},
			{"rate with period", rate(limiter.Spec{Limit: 1, Period: daily(nil)}), `rate[0].period: a rate limit has a window, not a period, got "daily"`},
			{"quota with window", quotas(sec), `quota[0].window: a quota has a period, not a window, got "1s"`},
			{"unknown period", quotas(limiter.Spec{Limit: 1, Period: yearly{}}), `quota[0].period: must be hourly, daily, weekly or monthly, got "yearly"`},
			{"unknown scope", rate(limiter.Spec{Limit: 1, Window: time.Second, Scope: 9}), `rate[0].scope: must be key, user or global, got "default"`},
			{"refundable rate", rate(limiter.Spec{Limit: 1, Window: time.Second, Refundable: true}), `rate[0].count: "success" applies only to quotas`},
			{"duplicate window", rate(sec, limiter.Spec{Limit: 2, Window: time.Second}), "rate[1]: duplicates rate[0]: one limit per window or period"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := s.PutRule(ctx, tc.rule)
				if !errors.Is(err, quota.ErrInvalid) || !strings.Contains(err.Error(), "invalid rule: "+tc.want) {
					t.Errorf("got %v, want ErrInvalid with %q", err, tc.want)
				}
			})
		}
		if rules, err := s.Rules(ctx, nil); err != nil || len(rules) != 0 {
			t.Errorf("after refused rules: got %d stored, %v", len(rules), err)
		}
	})

	t.Run("Watch", func(t *testing.T) {
		s := newStore(t)
		wctx, cancel := context.WithCancel(ctx)
		changes := make(chan struct{}, 16)
		done := make(chan error, 1)
		go func() {
			done <- s.WatchRules(wctx, func() {
				select {
				case changes <- struct{}{}:
				default:
				}
			})
		}()
		// 5 s is a timeout, not a speed.
		wait := func(after string) {
			t.Helper()
			select {
			case <-changes:
			case <-time.After(5 * time.Second):
				t.Fatalf("onChange was not called within 5s after %s", after)
			}
		}
		wait("starting")
		r, err := s.PutRule(ctx, limiter.Rule{Subject: "plan:free", Limits: limiter.Limits{Rate: []limiter.Spec{{Limit: 3, Window: time.Second}}}})
		if err != nil {
			t.Fatal(err)
		}
		wait("PutRule")
		if _, err := s.DeleteRule(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
		wait("DeleteRule")
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
}

// yearly is a period no rule may have.
type yearly struct{ quota.Calendar }

func (yearly) String() string { return "yearly" }
