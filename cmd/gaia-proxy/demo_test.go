package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer for one writer and a reader polling it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

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
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"demo"}, nil, &out, &errOut) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo ended with %v\n%s", err, errOut.String())
		}
	}()
	proxyLine := regexp.MustCompile(`proxy:\s+(http://127\.0\.0\.1:\d+)`)
	var proxy string
	for deadline := time.Now().Add(30 * time.Second); proxy == ""; time.Sleep(20 * time.Millisecond) {
		if m := proxyLine.FindStringSubmatch(out.String()); m != nil {
			proxy = m[1]
		}
		select {
		case err := <-done:
			done <- err // for the deferred check
			t.Fatalf("the demo ended before it printed a proxy URL: %v\n%s", err, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo printed no proxy URL:\n%s\n%s", out.String(), errOut.String())
		}
	}
	if strings.HasSuffix(proxy, ":8080") || strings.Contains(out.String(), "127.0.0.1:9090") {
		t.Errorf("the demo printed the taken ports:\n%s", out.String())
	}
	status := func(header ...string) int {
		req, _ := http.NewRequest("GET", proxy+"/hello", nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("X-API-Key", "wrong"); got != 401 {
		t.Errorf("a wrong key: %d, want 401", got)
	}
	var got []int
	began := time.Now()
	for range 12 {
		got = append(got, status("X-API-Key", "demo-free-key"))
	}
	// 10 a second: when the 12 fit in well under a second, as they do
	// on any machine not starved, the last two are refused.
	want := []int{200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 429, 429}
	switch took := time.Since(began); {
	case took < 900*time.Millisecond && !slices.Equal(got, want):
		t.Errorf("12 requests of the free plan in %v: %v, want %v", took, got, want)
	case got[0] != 200:
		t.Errorf("the free plan's first request: %d, want 200", got[0])
	}
}
