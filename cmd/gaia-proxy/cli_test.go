package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestHelpIsSuccess: -h on any command prints its usage and succeeds,
// as "gaia-proxy -h" does; main exits 0 when run returns nil.
func TestHelpIsSuccess(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"--help"}, {"help"},
		{"serve", "-h"}, {"serve", "--help"}, {"demo", "-h"}, {"migrate", "-h"},
		{"check", "-h"}, {"verify", "-h"}, {"hash-key", "-h"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), args, strings.NewReader(""), &out, &errOut)
			if err != nil {
				t.Errorf("run: %v, want nil (help is success)", err)
			}
			if !strings.Contains(strings.ToLower(out.String()+errOut.String()), "usage") {
				t.Errorf("no usage printed: stdout %q, stderr %q", out.String(), errOut.String())
			}
		})
	}
	// A flag that does not exist is still an error.
	if err := run(context.Background(), []string{"serve", "--frobnicate"}, nil, io.Discard, io.Discard); err == nil {
		t.Error("serve --frobnicate: no error")
	}
}

// TestHashKeyRefusesMalformedKeys: hash-key refuses, naming the problem,
// every key the proxy would answer 401 invalid_api_key for as malformed,
// and prints no hash for it.
func TestHashKeyRefusesMalformedKeys(t *testing.T) {
	for in, want := range map[string]string{
		"my key":                         "contains a space",
		"my key\n":                       "contains a space",
		" lead":                          "contains a space",
		"tab\there":                      "contains a control character",
		"clé":                            "contains a non-ASCII character",
		strings.Repeat("k", 1025):        "is 1025 bytes, more than 1024",
		strings.Repeat("k", 1025) + "\n": "is 1025 bytes, more than 1024",
	} {
		var out bytes.Buffer
		err := run(context.Background(), []string{"hash-key"}, strings.NewReader(in), &out, io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "malformed") {
			t.Errorf("hash-key %.20q: %v, want an error saying it %s", in, err, want)
		}
		if out.Len() != 0 {
			t.Errorf("hash-key %.20q printed %q, want nothing", in, out.String())
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"hash-key"}, strings.NewReader(strings.Repeat("k", 1024)+"\r\n"), &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "sha256:") {
		t.Errorf("hash-key of a 1024-character key: %q, %v; want its hash", out.String(), err)
	}
	// A key on the command line is refused, and not shown.
	err := run(context.Background(), []string{"hash-key", "s3cret"}, strings.NewReader("x"), &out, io.Discard)
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("hash-key with an argument: %v, want an error that does not show it", err)
	}
}

func TestDemoEnv(t *testing.T) {
	kept, ignored := demoEnv([]string{
		"HOME=/home/x", "DATABASE_URL=postgres://h/db", "GAIA_DATABASE_URL=", "GAIA_REDIS_URL=redis://h:6379",
		"GAIA_REDIS_PASSWORD=pw", "GAIA_ADMIN_TOKEN=t", "PORT=8000", "GAIA_REDISH=x",
	})
	if want := []string{"HOME=/home/x", "GAIA_ADMIN_TOKEN=t", "PORT=8000", "GAIA_REDISH=x"}; !slices.Equal(kept, want) {
		t.Errorf("kept %q, want %q", kept, want)
	}
	if want := []string{"DATABASE_URL", "GAIA_REDIS_PASSWORD", "GAIA_REDIS_URL"}; !slices.Equal(ignored, want) {
		t.Errorf("ignored %q, want %q", ignored, want)
	}
}

// TestDemoIgnoresEnvironmentStores runs the demo in a shell set up for a
// real deployment, its Redis and PostgreSQL named by the environment
// (here unusable loopback addresses): the demo still runs on its
// embedded stores, says so, and answers.
func TestDemoIgnoresEnvironmentStores(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://gaia:x@127.0.0.1:1/gaia?sslmode=disable&connect_timeout=1")
	t.Setenv("GAIA_DATABASE_URL", "postgres://gaia:x@127.0.0.1:1/other?sslmode=disable&connect_timeout=1")
	t.Setenv("GAIA_REDIS_URL", "redis://127.0.0.1:1/0")
	t.Setenv("GAIA_REDIS_TIMEOUT", "20ms")
	ctx, cancel := context.WithCancel(t.Context())
	out, errOut := &logBuffer{}, &logBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}, nil, out, errOut)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo ended with %v\n%s", err, errOut)
		}
	}()
	proxyLine := regexp.MustCompile(`proxy:\s+(http://127\.0\.0\.1:\d+)`)
	var m []string
	waitFor(t, 30*time.Second, "the demo's proxy URL", func() bool {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("the demo ended before it printed a proxy URL: %v\n%s", err, errOut)
		default:
		}
		m = proxyLine.FindStringSubmatch(out.String())
		return m != nil
	}, errOut)
	logs := errOut.String()
	for _, want := range []string{
		"limiter in-process, ledger embedded",
		"demo: ignoring DATABASE_URL, GAIA_DATABASE_URL, GAIA_REDIS_TIMEOUT, GAIA_REDIS_URL: the demo always runs on embedded stores",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "redis:") || strings.Contains(logs, "database:") {
		t.Errorf("the demo spoke of a Redis or a database:\n%s", logs)
	}
	req, _ := http.NewRequest("GET", m[1]+"/hello", nil)
	req.Header.Set("X-API-Key", "demo-free-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("demo-free-key: %d, want 200", resp.StatusCode)
	}
}
