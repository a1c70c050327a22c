package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"testing"
	"time"
)

// TestDemo runs the README's first command as a new user would, with
// its usual ports taken: it starts on free ones, prints where, and its
// printed examples behave as their comments say.
func TestDemo(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.1:9090"} {
		if ln, err := net.Listen("tcp", addr); err == nil { // else taken already
			t.Cleanup(func() { ln.Close() })
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	out, errOut := &logBuffer{}, &logBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"demo"}, nil, out, errOut) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo ended with %v\n%s", err, errOut)
		}
	}()
	proxyLine := regexp.MustCompile(`proxy:\s+(http://127\.0\.0\.1:(\d+))`)
	var m []string
	waitFor(t, 30*time.Second, "the demo's proxy URL", func() bool {
		select {
		case err := <-done:
			done <- err // for the deferred check
			t.Fatalf("the demo ended before it printed a proxy URL: %v\n%s", err, errOut)
		default:
		}
		m = proxyLine.FindStringSubmatch(out.String())
		return m != nil
	}, errOut)
	proxy := m[1]
	if m[2] == "8080" || regexp.MustCompile(`127\.0\.0\.1:9090\b`).MatchString(out.String()) {
		t.Errorf("the demo printed the taken ports:\n%s", out)
	}
	status := func(key string) int {
		req, _ := http.NewRequest("GET", proxy+"/hello", nil)
		req.Header.Set("X-API-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("wrong"); got != 401 {
		t.Errorf("a wrong key: %d, want 401", got)
	}
	// The free plan allows 10 a second. Each admitted request was decided
	// between its send and its answer; 11 admitted requests whose sends
	// and answers all fit in under a second were decided within one
	// window: that would be too many, however slow the machine.
	type try struct{ sent, answered time.Time }
	var admitted []try
	refused := 0
	for range 12 {
		sent := time.Now()
		switch got := status("demo-free-key"); got {
		case 200:
			admitted = append(admitted, try{sent, time.Now()})
		case 429:
			refused++
		default:
			t.Fatalf("the free plan answered %d, want 200 or 429", got)
		}
	}
	for i := 0; i+10 < len(admitted); i++ {
		if span := admitted[i+10].answered.Sub(admitted[i].sent); span < time.Second {
			t.Errorf("11 requests of the free plan (10 a second) admitted within %v", span)
		}
	}
	if len(admitted) < 10 {
		t.Errorf("12 requests of the free plan: %d admitted, %d refused; want at least the 10 of the first second", len(admitted), refused)
	}
}
