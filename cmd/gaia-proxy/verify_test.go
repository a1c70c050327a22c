package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// verifyTarget serves an admin port whose database check says db.
func verifyTarget(t *testing.T, db admin.Check) string {
	t.Helper()
	pol, err := limiter.NewPolicy(limiter.PolicyConfig{DefaultPlan: "free", Plans: []limiter.Plan{{Name: "free"}}})
	if err != nil {
		t.Fatal(err)
	}
	adm := admin.New(&admin.Options{
		Version: "gaia-proxy test",
		Token:   "s3cret",
		Policy:  func() *limiter.Policy { return pol },
		Checks: map[string]admin.Checker{
			"database": func(context.Context) admin.Check { return db },
		},
		// Long intervals: verify must not wait for them.
		Stream: admin.StreamOptions{StatsInterval: time.Hour, HeartbeatInterval: time.Hour},
	})
	ts := httptest.NewServer(adm)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		adm.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		ts.Close()
	})
	return ts.URL
}

func TestVerify(t *testing.T) {
	upstream := httptest.NewServer(http.NotFoundHandler()) // any answer will do
	defer upstream.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	for _, tc := range []struct {
		name   string
		db     admin.Check
		args   []string
		failed string // "" means success
		lines  []string
	}{
		{"ok", admin.Check{Status: admin.StatusOK, Mode: "postgres"}, []string{"--token", "s3cret", "--proxy", upstream.URL}, "", []string{
			"ok    health     status ok, gaia-proxy test",
			"ok    config     200",
			`ok    websocket  connected, first message "heartbeat"`,
			"ok    database   ok (postgres)",
			"ok    proxy      " + upstream.URL + " answers 404 Not Found",
		}},
		{"database degraded", admin.Check{Status: admin.StatusDegraded, Mode: "postgres", Error: "writes failing"}, []string{"--token", "s3cret"}, "database", []string{
			"ok    health     status degraded, gaia-proxy test",
			"FAIL  database   degraded (postgres): writes failing",
		}},
		{"wrong token", admin.Check{Status: admin.StatusOK}, []string{"--token", "nope"}, "config, websocket", []string{
			"FAIL  config     401 Unauthorized: wrong or missing admin token",
			"FAIL  websocket  connect: 401 Unauthorized",
			"ok    database   ok",
		}},
		{"proxy down", admin.Check{Status: admin.StatusOK}, []string{"--token", "s3cret", "--proxy", closed.URL}, "proxy", []string{
			"FAIL  proxy      Get ",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut strings.Builder
			args := append([]string{"verify", "--admin", verifyTarget(t, tc.db) + "/", "--timeout", "10s"}, tc.args...)
			err := run(context.Background(), args, nil, &out, &errOut)
			switch {
			case tc.failed == "" && err != nil:
				t.Errorf("verify: %v, want success\n%s", err, out.String())
			case tc.failed != "" && (err == nil || !strings.HasSuffix(err.Error(), "failed: "+tc.failed)):
				t.Errorf("verify: %v, want it to name %q\n%s", err, tc.failed, out.String())
			}
			for _, want := range tc.lines {
				if !strings.Contains(out.String(), "\n"+want) && !strings.HasPrefix(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}

// TestVerifyFlags: bad flags are errors, and a refused URL that carries
// user info is not echoed.
func TestVerifyFlags(t *testing.T) {
	for _, args := range [][]string{
		{"verify"},
		{"verify", "--admin", "127.0.0.1:9090"},
		{"verify", "--admin", "http://127.0.0.1:9090", "--proxy", "ftp://x"},
		{"verify", "--admin", "http://127.0.0.1:9090", "extra"},
		{"verify", "--admin", "ftp://admin:s3cret@127.0.0.1:9090"},
	} {
		var out, errOut strings.Builder
		err := run(context.Background(), args, nil, &out, &errOut)
		if err == nil {
			t.Errorf("%q: no error", args)
		} else if strings.Contains(err.Error()+out.String()+errOut.String(), "s3cret") {
			t.Errorf("%q: the error or output shows the password: %v %q %q", args, err, out.String(), errOut.String())
		}
	}
}
