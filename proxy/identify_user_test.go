package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestUserIDFromTrustedPeer: a trusted peer's user id is the subject
// user:<id> whenever it is UTF-8 text of at most 256 bytes without
// control characters, inner spaces and non-ASCII letters included; any
// other value is 400 invalid_user_id, never anonymous and never
// forwarded (SPEC §4.1: a trusted user_header gives user:<id>).
func TestUserIDFromTrustedPeer(t *testing.T) {
	id256 := strings.Repeat("é", 128) // 256 bytes, 128 characters
	tests := []struct {
		name    string
		user    string
		subject string // "" means 400 invalid_user_id
	}{
		{"ascii", "alice", "user:alice"},
		{"non-ASCII", "josé", "user:josé"},
		{"inner space", "Alice Smith", "user:alice smith"},
		{"surrounding spaces trimmed", "  bob  ", "user:bob"},
		{"256 bytes", id256, "user:" + id256},
		{"257 bytes", id256 + "x", ""},
		{"257 ASCII bytes", strings.Repeat("a", 257), ""},
		{"tab", "a\tb", ""},
		{"NUL", "a\x00b", ""},
		{"C1 control", "a\u0085b", ""},
		{"invalid UTF-8", "jos\xe9", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &fakeDecider{decide: allowAll}
			tr := subjectTransport{got: make(chan string, 1)}
			up, _ := url.Parse("http://upstream.invalid")
			p := New(up, d, &Settings{Policy: testPolicy(t), Identity: *testIdentity()}, &Options{Transport: tr, Logf: t.Logf})
			r := httptest.NewRequest("GET", "/x", nil)
			r.RemoteAddr = "127.0.0.1:5000" // trusted
			r.Header["X-User-Id"] = []string{tc.user}
			w := httptest.NewRecorder()
			p.ServeHTTP(w, r)
			if tc.subject != "" {
				if w.Code != 200 {
					t.Fatalf("status %d %s, want 200", w.Code, w.Body)
				}
				if got := <-tr.got; got != tc.subject {
					t.Errorf("forwarded as %q, want %q", got, tc.subject)
				}
				return
			}
			checkInvalidUserID(t, w.Code, w.Header(), w.Body.Bytes())
			select {
			case got := <-tr.got:
				t.Errorf("forwarded to the upstream as %q", got)
			default:
			}
			if n := d.calls.Load(); n != 0 {
				t.Errorf("%d decisions charged, want none", n)
			}
		})
	}
}

// TestInvalidUserIDOnTheWire sends what a real trusted peer could: a
// tab, bytes that are not UTF-8, an over-long id, a repeated header.
// net/http lets each through to the proxy, which refuses it before the
// upstream sees anything. The same header from an untrusted peer is
// dropped as before: it names nobody.
func TestInvalidUserIDOnTheWire(t *testing.T) {
	up := &upstreamRecorder{}
	srv := newTestProxy(t, up, &fakeDecider{decide: allowAll}, nil)
	for name, lines := range map[string][]string{
		"tab":           {"X-User-Id: a\tb"},
		"invalid UTF-8": {"X-User-Id: jos\xe9"},
		"257 bytes":     {"X-User-Id: " + strings.Repeat("u", 257)},
		"repeated":      {"X-User-Id: alice", "X-User-Id: bob"},
	} {
		t.Run(name, func(t *testing.T) {
			status, header, body := rawGet(t, srv, lines)
			checkInvalidUserID(t, status, header, body)
		})
	}
	if _, hits := up.last(); hits != 0 {
		t.Errorf("the upstream got %d requests, want none", hits)
	}
	for user, want := range map[string]string{"Alice Smith": "user:alice smith", "José": "user:josé"} {
		status, _, body := rawGet(t, srv, []string{"X-User-Id: " + user})
		if h, _ := up.last(); status != 200 || h.Get("X-Gaia-Subject") != want {
			t.Errorf("%q: status %d %s, forwarded subject %q; want 200, %s", user, status, body, h.Get("X-Gaia-Subject"), want)
		}
	}
}

func checkInvalidUserID(t *testing.T, status int, h http.Header, body []byte) {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(body, &e); err != nil || status != 400 || e.Error != "invalid_user_id" ||
		!strings.Contains(e.Message, "X-User-Id") || h.Get("Content-Type") != "application/json" {
		t.Errorf("answer %d %s (%s), want 400 JSON invalid_user_id naming the header", status, body, h.Get("Content-Type"))
	}
}

// rawGet sends GET /x with header lines as written, which http.Client
// would refuse to send, and returns the answer.
func rawGet(t *testing.T, srv *httptest.Server, lines []string) (int, http.Header, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := fmt.Sprintf("GET /x HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s\r\n\r\n", srv.Listener.Addr(), strings.Join(lines, "\r\n"))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}
