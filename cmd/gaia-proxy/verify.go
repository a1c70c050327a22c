package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// verifyCmd checks a deployment once it runs (SPEC §2): the admin port's
// /health, the admin API with the token, the live stream, the database
// as /health reports it and, with --proxy, that the proxy answers. One
// line per check; it fails, naming the failed checks, when any does.
func verifyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	adminURL := fs.String("admin", "", "admin port `URL`, e.g. http://127.0.0.1:9090 (required)")
	proxyURL := fs.String("proxy", "", "proxy `URL`; when set, the proxy must answer")
	token := fs.String("token", "", "admin `token` (default $GAIA_ADMIN_TOKEN)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long each check may take")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("verify: unexpected argument %q", fs.Arg(0))
	}
	base, err := httpURL("--admin", *adminURL)
	if err != nil {
		return err
	}
	if *proxyURL != "" {
		if _, err := httpURL("--proxy", *proxyURL); err != nil {
			return err
		}
	}
	if *token == "" {
		*token = os.Getenv("GAIA_ADMIN_TOKEN")
	}
	v := &verifier{base: strings.TrimSuffix(base.String(), "/"), token: *token, timeout: *timeout,
		client: &http.Client{Timeout: *timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}

	var failed []string
	line := func(name, detail string, err error) {
		if err != nil {
			failed = append(failed, name)
			fmt.Fprintf(stdout, "FAIL  %-10s %v\n", name, err)
			return
		}
		fmt.Fprintf(stdout, "ok    %-10s %s\n", name, detail)
	}
	h, detail, err := v.health(ctx)
	line("health", detail, err)
	line("config", "200", v.config(ctx))
	detail, err = v.stream(ctx)
	line("websocket", detail, err)
	detail, err = h.database()
	line("database", detail, err)
	if *proxyURL != "" {
		detail, err = v.proxy(ctx, *proxyURL)
		line("proxy", detail, err)
	}
	if len(failed) > 0 {
		return fmt.Errorf("verify: failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

// httpURL parses an http or https URL given as flag.
func httpURL(flag, s string) (*url.URL, error) {
	if s == "" {
		return nil, fmt.Errorf("verify: %s is required", flag)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		shown := strconv.Quote(s)
		if err != nil || u.User != nil { // it may hold a password
			shown = "(not shown)"
		}
		return nil, fmt.Errorf("verify: %s %s: want an http:// or https:// URL", flag, shown)
	}
	return u, nil
}

// verifier runs the checks against one admin port.
type verifier struct {
	base    string // admin URL, without a trailing slash
	token   string
	timeout time.Duration
	client  *http.Client
}

// healthReport is the part of /health that verify reads.
type healthReport struct {
	Status  string `json:"status"`
	Version string `json:"version"`
	Checks  map[string]struct {
		Status string `json:"status"`
		Mode   string `json:"mode"`
		Error  string `json:"error"`
	} `json:"checks"`
}

// health fetches /health: it must answer 200 with a report (nil when
// it did not send one).
func (v *verifier) health(ctx context.Context) (*healthReport, string, error) {
	resp, err := v.get(ctx, v.base+"/health", false)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	var h healthReport
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&h); err != nil || h.Status == "" {
		return nil, "", fmt.Errorf("%s: no health report", resp.Status)
	}
	detail := fmt.Sprintf("status %s, %s", h.Status, h.Version)
	if resp.StatusCode != http.StatusOK {
		return &h, "", fmt.Errorf("%s: %s", resp.Status, detail)
	}
	return &h, detail, nil
}

// database reads the database check of the /health report.
func (h *healthReport) database() (string, error) {
	if h == nil {
		return "", errors.New("unknown: /health sent no report")
	}
	c, ok := h.Checks["database"]
	if !ok {
		return "", errors.New("not reported by /health")
	}
	detail := c.Status
	if c.Mode != "" {
		detail += " (" + c.Mode + ")"
	}
	if c.Status != "ok" {
		if c.Error != "" {
			detail += ": " + c.Error
		}
		return "", errors.New(detail)
	}
	return detail, nil
}

// config asks the admin API for the effective configuration.
func (v *verifier) config(ctx context.Context) error {
	resp, err := v.get(ctx, v.base+"/api/admin/quotas/config", true)
	if err != nil {
		return err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusUnauthorized:
		return fmt.Errorf("%s: wrong or missing admin token (--token, GAIA_ADMIN_TOKEN)", resp.Status)
	}
	return errors.New(resp.Status)
}

// stream connects to the live stream and waits for its first message.
func (v *verifier) stream(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	o := &websocket.DialOptions{HTTPClient: v.client, HTTPHeader: v.auth()}
	c, resp, err := websocket.Dial(ctx, v.base+"/ws/admin/quotas", o)
	if err != nil {
		if resp != nil {
			return "", fmt.Errorf("connect: %s", resp.Status)
		}
		return "", fmt.Errorf("connect: %w", err)
	}
	defer c.CloseNow()
	_, b, err := c.Read(ctx)
	if err != nil {
		return "", fmt.Errorf("connected, but no message within %v: %w", v.timeout, err)
	}
	var m struct{ Type string }
	if err := json.Unmarshal(b, &m); err != nil || m.Type == "" {
		return "", fmt.Errorf("connected, but the first message is not a stream message: %.80q", b)
	}
	c.Close(websocket.StatusNormalClosure, "")
	return fmt.Sprintf("connected, first message %q", m.Type), nil
}

// proxy checks that the proxy answers at all: any HTTP status will do.
func (v *verifier) proxy(ctx context.Context, u string) (string, error) {
	resp, err := v.get(ctx, u, false)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return u + " answers " + resp.Status, nil
}

func (v *verifier) get(ctx context.Context, u string, auth bool) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if auth {
		req.Header = v.auth()
	}
	return v.client.Do(req)
}

// auth is the Authorization header of the token, if any.
func (v *verifier) auth() http.Header {
	h := http.Header{}
	if v.token != "" {
		h.Set("Authorization", "Bearer "+v.token)
	}
	return h
}
