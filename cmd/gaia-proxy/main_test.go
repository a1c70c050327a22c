package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gaia-proxy/gaia-proxy/config"
)

func TestExampleConfigsLoad(t *testing.T) {
	for _, file := range []string{"../../deploy/examples/gaia.yaml", "demo.yaml", "../../bench/gaia-bench.yaml"} {
		t.Run(filepath.Base(file), func(t *testing.T) {
			c, err := config.Load(config.LoadOptions{File: file, Overrides: map[string]any{"upstream": "http://127.0.0.1:9"}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := buildSettings(c); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestHashKey(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"hash-key"}, strings.NewReader("test\n"), &out, &out); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"; got != want {
		t.Errorf("hash-key = %q, want %q", got, want)
	}
	if err := run(context.Background(), []string{"hash-key"}, strings.NewReader("\n"), &out, &out); err == nil {
		t.Error("hash-key accepted an empty key")
	}
}

func TestCommands(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, nil, &out, &out); err != nil || !strings.HasPrefix(out.String(), "gaia-proxy ") {
		t.Errorf("version: %q, %v", out.String(), err)
	}
	if err := run(context.Background(), []string{"frobnicate"}, nil, &out, &out); err == nil || !strings.Contains(err.Error(), "frobnicate") {
		t.Errorf("unknown command: %v", err)
	}
	err := run(context.Background(), []string{"serve", "--listen", "127.0.0.1:0"}, nil, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "upstream") {
		t.Errorf("serve without upstream: %v, want an error naming upstream", err)
	}
	err = run(context.Background(), []string{"serve", "--upstream", "http://127.0.0.1:1", "--admin-listen", "0.0.0.0:0"}, nil, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "admin.token") {
		t.Errorf("non-loopback admin without token: %v, want refusal naming admin.token", err)
	}
}

// TestServeFlagsOnly runs `serve --upstream URL` with no file at all.
func TestServeFlagsOnly(t *testing.T) {
	up := newUpstream(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stderr bytes.Buffer
	t.Chdir(t.TempDir()) // data_dir defaults to ./gaia-data
	go func() {
		done <- run(ctx, []string{"serve", "--upstream", up.URL, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}, nil, &stderr, &stderr)
	}()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v\n%s", err, stderr.String())
	}
	if _, err := os.Stat("gaia-data/gaia.db"); err != nil {
		t.Errorf("no embedded store in ./gaia-data: %v", err)
	}
}
