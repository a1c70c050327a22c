package pgstore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota/pgstore"
	"github.com/gaia-proxy/gaia-proxy/quota/quotatest"
)

func TestRules(t *testing.T) {
	quotatest.RunRules(t, func(t *testing.T) quotatest.Rules { return pgStore(t) })
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
