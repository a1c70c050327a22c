package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// misplacedSecrets are config lines that put a DSN where a section
// belongs, each with the password "hunter2".
var misplacedSecrets = []struct{ line, key string }{
	{`database: "postgres://gaia:hunter2@db.internal:5432/gaia"`, "database: must be a mapping"},
	{`redis: "redis://:hunter2@redis.internal:6379/0"`, "redis: must be a mapping"},
}

// TestConfigErrorsHideSecrets: a config error about a value that holds
// a password names the key and never shows the password: not at start,
// not in the log or on the unauthenticated /health after a refused
// reload.
func TestConfigErrorsHideSecrets(t *testing.T) {
	up := newUpstream(t)
	for _, m := range misplacedSecrets {
		t.Run("start/"+strings.Fields(m.line)[0], func(t *testing.T) {
			dir := t.TempDir()
			file := writeConfig(t, filepath.Join(dir, "gaia.yaml"),
				strings.Replace(reloadConfig, "LIMIT", "2", 1)+m.line+"\n", up.URL, dir)
			logs := &logBuffer{}
			err := serve(context.Background(), serveOptions{LoadOptions: loadFile(file)}, logs.logf, nil)
			if err == nil || !strings.Contains(err.Error(), m.key) {
				t.Fatalf("serve: %v, want an error with %q", err, m.key)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(logs.String(), "hunter2") {
				t.Errorf("the start error shows the password: %v\n%s", err, logs)
			}
		})
	}

	dir := t.TempDir()
	file := writeConfig(t, filepath.Join(dir, "gaia.yaml"), strings.Replace(reloadConfig, "LIMIT", "2", 1), up.URL, dir)
	valid, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	in := start(t, file)
	for _, m := range misplacedSecrets {
		if err := os.WriteFile(file, append(valid, m.line+"\n"...), 0o600); err != nil {
			t.Fatal(err)
		}
		var body string
		eventually(t, "the refusal of "+m.key+" on /health", func() bool {
			_, body = call(t, in.admin+"/health")
			return strings.Contains(body, m.key)
		}, in.logs)
		if strings.Contains(body, "hunter2") {
			t.Errorf("/health shows the password: %s", body)
		}
		if !strings.Contains(in.logs.String(), m.key) {
			t.Errorf("the refusal was not logged:\n%s", in.logs)
		}
		if err := os.WriteFile(file, valid, 0o600); err != nil {
			t.Fatal(err)
		}
		eventually(t, "recovery", func() bool {
			_, body := call(t, in.admin+"/health")
			return strings.Contains(body, `"config":{"status":"ok"}`)
		}, in.logs)
	}
	if strings.Contains(in.logs.String(), "hunter2") {
		t.Errorf("the log shows the password:\n%s", in.logs)
	}
}

// TestUpstreamCredentialsNotLogged: an upstream URL with user info is
// logged without its password.
func TestUpstreamCredentialsNotLogged(t *testing.T) {
	up := newUpstream(t)
	dir := t.TempDir()
	withAuth := strings.Replace(up.URL, "http://", "http://gaia:hunter2@", 1)
	file := writeConfig(t, filepath.Join(dir, "gaia.yaml"), strings.Replace(reloadConfig, "LIMIT", "2", 1), withAuth, dir)
	in := start(t, file)
	if resp, body := call(t, in.admin+"/health"); resp.StatusCode != http.StatusOK || strings.Contains(body, "hunter2") {
		t.Errorf("/health: %d %s", resp.StatusCode, body)
	}
	in.stop(t)
	logs := in.logs.String()
	if strings.Contains(logs, "hunter2") {
		t.Errorf("the log shows the upstream password:\n%s", logs)
	}
	if !strings.Contains(logs, "-> http://gaia:xxxxx@127.0.0.1:") {
		t.Errorf("the start line does not show the redacted upstream:\n%s", logs)
	}
}

// TestCheckHidesUpstreamPassword: `gaia-proxy check` prints the
// upstream without its password, reachable or not.
func TestCheckHidesUpstreamPassword(t *testing.T) {
	up := newUpstream(t)
	closed := newUpstream(t)
	closed.Close()
	for name, target := range map[string]string{"reachable": up.URL, "unreachable": closed.URL} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			withAuth := strings.Replace(target, "http://", "http://gaia:hunter2@", 1)
			file := writeConfig(t, filepath.Join(dir, "gaia.yaml"), strings.Replace(reloadConfig, "LIMIT", "2", 1), withAuth, dir)
			var out strings.Builder
			err := run(context.Background(), []string{"check", "--config", file}, nil, &out, &out)
			if (err == nil) != (name == "reachable") {
				t.Errorf("check: %v\n%s", err, out.String())
			}
			if strings.Contains(out.String(), "hunter2") || !strings.Contains(out.String(), "http://gaia:xxxxx@127.0.0.1:") {
				t.Errorf("check output, want the upstream without its password:\n%s", out.String())
			}
		})
	}
}

// TestCheckOneLinePerCheck: a config with several problems is still one
// FAIL line, naming them all.
func TestCheckOneLinePerCheck(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gaia.yaml")
	if err := os.WriteFile(file, []byte("upstream: http://127.0.0.1:1\nquota: {timezone: Mars/Olymp}\nredis: {url: redis://127.0.0.1:1/0, failure_mode: maybe}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"check", "--config", file}, nil, &out, &out); err == nil {
		t.Fatalf("check of a bad config passed:\n%s", out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "FAIL  config") || !strings.Contains(lines[0], "quota.timezone") || !strings.Contains(lines[0], "redis.failure_mode") {
		t.Errorf("check printed %q; want one FAIL line naming quota.timezone and redis.failure_mode", lines)
	}
}
