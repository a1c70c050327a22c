package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/gaia-proxy/gaia-proxy/config"
)

//go:embed demo.yaml
var demoConfig []byte

// demoCmd runs the proxy with demo.yaml in front of a built-in echo
// service, on embedded stores in a temporary directory.
func demoCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newServeFlags("demo", stderr)
	if err := f.fs.Parse(args); err != nil {
		return err
	}
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
	logf := log.New(stderr, "", log.LstdFlags).Printf
	return serve(ctx, serveOptions{LoadOptions: lo}, logf, func(proxyAddr, adminAddr string) {
		printDemo(stdout, proxyAddr, adminAddr)
	})
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

func printDemo(w io.Writer, proxyAddr, adminAddr string) {
	p := "http://" + proxyAddr
	fmt.Fprintf(w, `gaia-proxy demo is running.
  proxy:      %[1]s  (in front of a built-in echo service)
  admin:      http://%[2]s/health

Try:
  curl -i %[1]s/hello                                   # anonymous: 5 per second by IP
  curl -i -H 'X-API-Key: demo-free-key' %[1]s/hello     # plan free: 10/s, 300/min, 1000/day
  curl -i -H 'Authorization: Bearer demo-pro-key' %[1]s/hello   # plan pro, user alice
  curl -i -H 'X-API-Key: wrong' %[1]s/hello             # 401 invalid_api_key
  for i in $(seq 12); do curl -s -o /dev/null -w '%%{http_code} ' -H 'X-API-Key: demo-free-key' %[1]s/hello; done; echo
                                                        # the 11th and 12th are 429
  curl -i -H 'X-API-Key: demo-free-key' %[1]s/expensive # costs 5 units

Stop with Ctrl-C.
`, p, adminAddr)
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

// hashKeyCmd reads an API key on stdin and prints its config hash.
func hashKeyCmd(stdin io.Reader, stdout io.Writer) error {
	b, err := io.ReadAll(io.LimitReader(stdin, 64<<10))
	if err != nil {
		return fmt.Errorf("hash-key: %w", err)
	}
	key := strings.TrimRight(string(b), "\r\n")
	if key == "" {
		return fmt.Errorf("hash-key: no key on stdin (try: printf %%s \"$KEY\" | gaia-proxy hash-key)")
	}
	fmt.Fprintln(stdout, config.HashKey(key))
	return nil
}
