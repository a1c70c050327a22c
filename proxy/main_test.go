package proxy

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the package if a test leaves goroutines behind in the
// proxy or in HTTP connections: a proxy that leaks one per request would
// eat a server in a day.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitLeaks(5 * time.Second); len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "goroutines leaked:\n%s\n", strings.Join(leaked, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// waitLeaks waits for goroutines running proxy or net/http code to end
// and returns the stacks of those that do not.
func waitLeaks(wait time.Duration) []string {
	deadline := time.Now().Add(wait)
	for {
		leaked := leaks()
		if len(leaked) == 0 || time.Now().After(deadline) {
			return leaked
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func leaks() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "proxy.leaks") {
			continue // this goroutine
		}
		if strings.Contains(g, "gaia-proxy/proxy.") || strings.Contains(g, "net/http.") {
			out = append(out, g)
		}
	}
	return out
}
