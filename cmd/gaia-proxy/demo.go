package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gaia-proxy/gaia-proxy/config"
	"github.com/gaia-proxy/gaia-proxy/internal/credential"
)

//go:embed demo.yaml
var demoConfig []byte

// demoCmd runs the proxy with demo.yaml in front of a built-in echo
// service, on embedded stores in a temporary directory: always, whatever
// the environment says (demoEnv), so that trying the demo in a shell set
// up for a real deployment never charges its Redis counters or writes
// demo traffic into its ledger.
func demoCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newServeFlags("demo", stderr)
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	logf := log.New(stderr, "", log.LstdFlags).Printf
	dir, err := os.MkdirTemp("", "gaia-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "gaia.yaml")
	if err := os.WriteFile(file, demoConfig, 0o600); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	echo := &http.Server{Handler: http.HandlerFunc(echoHandler)}
	go echo.Serve(ln)
	defer echo.Close()

	lo := f.loadOptions()
	var ignored []string
	if lo.Env, ignored = demoEnv(lo.Env); len(ignored) > 0 {
		logf("demo: ignoring %s: the demo always runs on embedded stores in a temporary directory", strings.Join(ignored, ", "))
	}
	lo.File = file
	lo.Overrides["upstream"] = "http://" + ln.Addr().String()
	// The demo's usual ports, unless taken (another demo, a dev server):
	// then any free ones. What it prints names the ports it got.
	if cfg, err := config.Load(lo); err == nil {
		for key, addr := range map[string]string{"listen": cfg.Listen, "admin.listen": cfg.Admin.Listen} {
			if _, set := lo.Overrides[key]; !set && !free(addr) {
				lo.Overrides[key] = "127.0.0.1:0"
			}
		}
	}
	if _, ok := lo.Overrides["data_dir"]; !ok {
		lo.Overrides["data_dir"] = filepath.Join(dir, "data")
	}
	dataDir, _ := lo.Overrides["data_dir"].(string)
	return serve(ctx, serveOptions{LoadOptions: lo}, logf, func(proxyAddr, adminAddr string) {
		printDemo(stdout, proxyAddr, adminAddr, dataDir)
	})
}

// demoEnv returns env without the variables that choose the hot path
// and the ledger (GAIA_REDIS_*, GAIA_DATABASE_*, DATABASE_URL), and the
// sorted names of those it dropped that were set. No demo flag chooses them, and
// the demo's config file is its own, so these are the only way a store
// could reach the demo.
func demoEnv(env []string) (kept, ignored []string) {
	for _, kv := range env {
		name, val, _ := strings.Cut(kv, "=")
		if name == "DATABASE_URL" || strings.HasPrefix(name, "GAIA_REDIS_") || strings.HasPrefix(name, "GAIA_DATABASE_") {
			if val != "" && !slices.Contains(ignored, name) {
				ignored = append(ignored, name)
			}
			continue
		}
		kept = append(kept, kv)
	}
	slices.Sort(ignored)
	return kept, ignored
}

// free reports whether addr can be listened on now.
func free(addr string) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func printDemo(w io.Writer, proxyAddr, adminAddr, dataDir string) {
	p := "http://" + proxyAddr
	fmt.Fprintf(w, `gaia-proxy demo is running.
  proxy:      %[1]s  (in front of a built-in echo service)
  admin:      http://%[2]s/health
  stores:     embedded, in %[3]s

Try:
  curl -i %[1]s/hello                                   # anonymous: 5 per second by IP
  curl -i -H 'X-API-Key: demo-free-key' %[1]s/hello     # plan free: 10/s, 300/min, 1000/day
  curl -i -H 'Authorization: Bearer demo-pro-key' %[1]s/hello   # plan pro, user alice
  curl -i -H 'X-API-Key: wrong' %[1]s/hello             # 401 invalid_api_key
  for i in $(seq 12); do curl -s -o /dev/null -w '%%{http_code} ' -H 'X-API-Key: demo-free-key' %[1]s/hello; done; echo
                                                        # the 11th and 12th are 429
  curl -i -H 'X-API-Key: demo-free-key' %[1]s/expensive # costs 5 units

Stop with Ctrl-C.
`, p, adminAddr, dataDir)
}

// echoHandler answers with what it received, so the demo shows the
// headers gaia-proxy adds.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	headers := map[string]string{}
	for k, v := range r.Header {
		if strings.HasPrefix(k, "X-Gaia-") || strings.HasPrefix(k, "X-Forwarded-") {
			headers[k] = strings.Join(v, ", ")
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"method":     r.Method,
		"path":       r.URL.Path,
		"body_bytes": n,
		"headers":    headers,
	})
}

// hashKeyCmd reads an API key on stdin and prints its config hash. It
// refuses a key the proxy would refuse as malformed (credential.CheckKey):
// its hash would name a key no request could present.
func hashKeyCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hash-key", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: printf %%s "$KEY" | gaia-proxy hash-key

Reads an API key on stdin and prints its sha256:<hex> for a key's hash:
in the config. A key the proxy would refuse as malformed is refused.
`)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		// Not shown: it may well be the key, which belongs on stdin, out
		// of shell history and process lists.
		return fmt.Errorf("hash-key: takes no arguments: the key goes on stdin (printf %%s \"$KEY\" | gaia-proxy hash-key)")
	}
	b, err := io.ReadAll(io.LimitReader(stdin, 64<<10))
	if err != nil {
		return fmt.Errorf("hash-key: %w", err)
	}
	key := strings.TrimRight(string(b), "\r\n")
	if key == "" {
		return fmt.Errorf("hash-key: no key on stdin (try: printf %%s \"$KEY\" | gaia-proxy hash-key)")
	}
	if err := credential.CheckKey(key); err != nil {
		return fmt.Errorf("hash-key: the key %v, so the proxy would refuse it as malformed (%s)", err, credential.KeyRule)
	}
	fmt.Fprintln(stdout, config.HashKey(key))
	return nil
}
