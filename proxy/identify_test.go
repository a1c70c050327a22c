package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/gaia-proxy/gaia-proxy/internal/credential"
)

func testIdentity() *Identity {
	return &Identity{
		APIKeyHeaders: []string{"X-Api-Key", "Authorization"},
		UserHeader:    "X-User-Id",
		Trusted:       []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")},
	}
}

func TestAPIKey(t *testing.T) {
	tests := []struct {
		name    string
		headers map[string][]string
		key     string
		header  string
		err     error
	}{
		{"none", nil, "", "", errNoKey},
		{"x-api-key", map[string][]string{"X-Api-Key": {"k1"}}, "k1", "X-Api-Key", nil},
		{"bearer", map[string][]string{"Authorization": {"Bearer k2"}}, "k2", "Authorization", nil},
		{"bearer lower case", map[string][]string{"Authorization": {"bearer k2"}}, "k2", "Authorization", nil},
		{"first header wins", map[string][]string{"X-Api-Key": {"k1"}, "Authorization": {"Bearer k2"}}, "k1", "X-Api-Key", nil},
		{"bearer without key", map[string][]string{"Authorization": {"Bearer"}}, "", "Authorization", errMalformedKey},
		{"bearer with spaces only", map[string][]string{"Authorization": {"Bearer    "}}, "", "Authorization", errMalformedKey},
		{"basic is not ours", map[string][]string{"Authorization": {"Basic dXNlcjpwYXNz"}}, "", "", errNoKey},
		{"bearer and a tab", map[string][]string{"Authorization": {"Bearer\tkey-one"}}, "key-one", "Authorization", nil},
		{"bearer and spaces and tabs", map[string][]string{"Authorization": {"bearer \t \tkey-one"}}, "key-one", "Authorization", nil},
		{"bearer with a tab only", map[string][]string{"Authorization": {"Bearer\t"}}, "", "Authorization", errMalformedKey},
		{"bearer with white space only", map[string][]string{"Authorization": {"Bearer \t \t"}}, "", "Authorization", errMalformedKey},
		{"bearer and a key with a tab", map[string][]string{"Authorization": {"Bearer\tkey\tone"}}, "", "Authorization", errMalformedKey},
		{"bearer glued by latin-1 nbsp", map[string][]string{"Authorization": {"Bearer\xa0key-one"}}, "", "Authorization", errMalformedKey},
		{"bearer glued by nbsp", map[string][]string{"Authorization": {"Bearer\u00a0key-one"}}, "", "Authorization", errMalformedKey},
		{"bearer glued by nel", map[string][]string{"Authorization": {"Bearer\x85key-one"}}, "", "Authorization", errMalformedKey},
		{"nbsp before bearer", map[string][]string{"Authorization": {"\xa0Bearer key-one"}}, "", "Authorization", errMalformedKey},
		{"a longer scheme is not ours", map[string][]string{"Authorization": {"BearerToken k2"}}, "", "", errNoKey},
		{"bearer and a comma is not ours", map[string][]string{"Authorization": {"Bearer,k2"}}, "", "", errNoKey},
		{"basic glued by nbsp is not ours", map[string][]string{"Authorization": {"Basic\xa0dXNlcjpwYXNz"}}, "", "", errNoKey},
		{"empty x-api-key is absent", map[string][]string{"X-Api-Key": {""}}, "", "", errNoKey},
		{"empty x-api-key, then bearer", map[string][]string{"X-Api-Key": {""}, "Authorization": {"Bearer k2"}}, "k2", "Authorization", nil},
		{"blank x-api-key, then bearer", map[string][]string{"X-Api-Key": {" \t "}, "Authorization": {"Bearer k2"}}, "k2", "Authorization", nil},
		{"two empty x-api-keys, then bearer", map[string][]string{"X-Api-Key": {"", " "}, "Authorization": {"Bearer k2"}}, "k2", "Authorization", nil},
		{"empty authorization", map[string][]string{"Authorization": {""}}, "", "", errNoKey},
		{"two x-api-keys", map[string][]string{"X-Api-Key": {"a", "b"}}, "", "X-Api-Key", errMalformedKey},
		{"x-api-key empty and not", map[string][]string{"X-Api-Key": {"", "k1"}, "Authorization": {"Bearer k2"}}, "", "X-Api-Key", errMalformedKey},
		{"x-api-key not empty and empty", map[string][]string{"X-Api-Key": {"k1", ""}}, "", "X-Api-Key", errMalformedKey},
		{"key with space", map[string][]string{"X-Api-Key": {"a b"}}, "", "X-Api-Key", errMalformedKey},
		{"key with control", map[string][]string{"X-Api-Key": {"a\x01b"}}, "", "X-Api-Key", errMalformedKey},
		{"trimmed", map[string][]string{"X-Api-Key": {"  k1  "}}, "k1", "X-Api-Key", nil},
	}
	id := testIdentity()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key, header, err := id.apiKey(http.Header(tc.headers))
			if key != tc.key || header != tc.header || err != tc.err {
				t.Errorf("apiKey = %q, %q, %v; want %q, %q, %v", key, header, err, tc.key, tc.header, tc.err)
			}
		})
	}
}

func TestPeerOf(t *testing.T) {
	tests := []struct {
		name    string
		remote  string
		xff     []string
		trusted bool
		client  string
	}{
		{"untrusted ignores xff", "203.0.113.9:5000", []string{"1.2.3.4"}, false, "203.0.113.9"},
		{"trusted without xff", "127.0.0.1:5000", nil, true, "127.0.0.1"},
		{"trusted takes last untrusted hop", "127.0.0.1:5000", []string{"1.2.3.4, 5.6.7.8"}, true, "5.6.7.8"},
		{"trusted hops are skipped", "127.0.0.1:5000", []string{"1.2.3.4, 10.1.1.1", "10.2.2.2"}, true, "1.2.3.4"},
		{"spoofed left entries do not matter", "10.0.0.5:1", []string{"6.6.6.6, 7.7.7.7"}, true, "7.7.7.7"},
		{"garbage ends the walk", "127.0.0.1:5000", []string{"1.2.3.4, garbage, 10.1.1.1"}, true, "10.1.1.1"},
		{"ipv4 hop with a port", "127.0.0.1:5000", []string{"1.2.3.4:5678"}, true, "1.2.3.4"},
		{"ipv6 hop with a port", "127.0.0.1:5000", []string{"[2001:db8::1]:443"}, true, "2001:db8::1"},
		{"bracketed ipv6 hop", "127.0.0.1:5000", []string{"[2001:db8::1]"}, true, "2001:db8::1"},
		{"trusted hop with a port is skipped", "127.0.0.1:5000", []string{"1.2.3.4:80, 10.1.1.1:443"}, true, "1.2.3.4"},
		{"ipv4-mapped hop with a port", "127.0.0.1:5000", []string{"[::ffff:1.2.3.4]:80"}, true, "1.2.3.4"},
		{"ipv6 without brackets is an address", "127.0.0.1:5000", []string{"2001:db8::1:443"}, true, "2001:db8::1:443"},
		{"bracketed ipv4 ends the walk", "127.0.0.1:5000", []string{"1.2.3.4, [5.6.7.8], 10.1.1.1"}, true, "10.1.1.1"},
		{"ipv4 with an empty port ends the walk", "127.0.0.1:5000", []string{"1.2.3.4, 5.6.7.8:, 10.1.1.1"}, true, "10.1.1.1"},
		{"ipv6 with a port, no brackets, ends the walk", "127.0.0.1:5000", []string{"1.2.3.4, 2001:db8::1:443:x, 10.1.1.1"}, true, "10.1.1.1"},
		{"port out of range ends the walk", "127.0.0.1:5000", []string{"1.2.3.4, 5.6.7.8:65536, 10.1.1.1"}, true, "10.1.1.1"},
		{"host name with a port ends the walk", "127.0.0.1:5000", []string{"1.2.3.4, example.com:80, 10.1.1.1"}, true, "10.1.1.1"},
		{"unclosed bracket ends the walk", "127.0.0.1:5000", []string{"1.2.3.4, [2001:db8::1, 10.1.1.1"}, true, "10.1.1.1"},
		{"all trusted", "127.0.0.1:5000", []string{"10.1.1.1"}, true, "10.1.1.1"},
		{"ipv6 peer", "[::1]:5000", []string{"2001:db8::1"}, true, "2001:db8::1"},
		{"ipv4-mapped peer", "[::ffff:203.0.113.9]:5000", nil, false, "203.0.113.9"},
	}
	id := testIdentity()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			p := id.peerOf(r)
			if p.trusted != tc.trusted || p.client.String() != tc.client {
				t.Errorf("peerOf = trusted %v, client %s; want %v, %s", p.trusted, p.client, tc.trusted, tc.client)
			}
		})
	}
}

func TestUserIDOnlyFromTrustedPeers(t *testing.T) {
	id := testIdentity()
	h := http.Header{"X-User-Id": {"alice"}}
	if u, ok, err := id.userID(h, peer{trusted: true}); !ok || err != nil || u != "alice" {
		t.Errorf("trusted peer: userID = %q, %v, %v; want alice, true, nil", u, ok, err)
	}
	if u, ok, err := id.userID(h, peer{trusted: false}); ok || err != nil {
		t.Errorf("untrusted peer: userID = %q, %v, %v; want nothing", u, ok, err)
	}
	if _, ok, err := id.userID(http.Header{"X-User-Id": {"a\x01b"}}, peer{trusted: false}); ok || err != nil {
		t.Errorf("untrusted peer's unreadable user id: %v, %v; want ignored", ok, err)
	}
	if u, ok, err := id.userID(http.Header{"X-User-Id": {"  "}}, peer{trusted: true}); ok || err != nil {
		t.Errorf("blank user header: userID = %q, %v, %v; want nothing, as if absent", u, ok, err)
	}
	if u, ok, err := id.userID(http.Header{"X-User-Id": {" a b "}}, peer{trusted: true}); !ok || err != nil || u != "a b" {
		t.Errorf("user id with an inner space: userID = %q, %v, %v; want \"a b\", true, nil", u, ok, err)
	}
	if _, _, err := id.userID(http.Header{"X-User-Id": {"a", "b"}}, peer{trusted: true}); err != errRepeatedUser {
		t.Errorf("repeated user header: err = %v, want %v", err, errRepeatedUser)
	}
}

// FuzzIdentity feeds arbitrary header values and peers to the parsers:
// they never panic, never accept a key or user id that breaks the
// credential rules, never pass upstream as another scheme a Bearer
// value split on white space, and never take an identity from an
// untrusted peer's headers.
func FuzzIdentity(f *testing.F) {
	f.Add("k1", "Bearer k2", "1.2.3.4, 5.6.7.8", "127.0.0.1:80", "alice")
	f.Add("", "Bearer", "", "203.0.113.9:1", "")
	f.Add("a b", "bearer  x ", "garbage,,, ::1", "[::1]:9", "a\x00b")
	f.Add("\xff\xfe", "Basic abc", "2001:db8::1,10.0.0.1", "[::ffff:10.0.0.1]:5", "bob")
	f.Add("x", "Bearer y z", ",", "not-an-addr", " ")
	f.Add(" ", "Bearer\tk2", "1.2.3.4:5678, [2001:db8::1]:443", "127.0.0.1:80", "")
	f.Add("", "\u00a0bearer\u00a0k2", "[2001:db8::1], [1.2.3.4], 5.6.7.8:", "10.0.0.1:1", "")
	id := testIdentity()
	f.Fuzz(func(t *testing.T, apiKey, auth, xff, remote, user string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		r.Header["X-Api-Key"] = []string{apiKey}
		r.Header["Authorization"] = []string{auth}
		r.Header["X-Forwarded-For"] = []string{xff}
		r.Header["X-User-Id"] = []string{user}
		key, _, err := id.apiKey(r.Header)
		if err == nil && credential.CheckKey(key) != nil {
			t.Fatalf("accepted invalid key %q", key)
		}
		if w := strings.Fields(auth); err == errNoKey && len(w) > 0 && strings.EqualFold(w[0], "Bearer") {
			t.Fatalf("Authorization %q passed as another scheme", auth)
		}
		p := id.peerOf(r)
		if !p.trusted && p.client != p.addr {
			t.Fatalf("untrusted peer %v spoofed client %v", p.addr, p.client)
		}
		if u, ok, err := id.userID(r.Header, p); ok && (!p.trusted || credential.CheckUserID(u) != nil) {
			t.Fatalf("user %q accepted from peer %+v", u, p)
		} else if err != nil && !p.trusted {
			t.Fatalf("untrusted peer %+v's user header read: %v", p, err)
		}
	})
}

// subjectTransport answers every request at once and keeps the subject
// the proxy forwarded.
type subjectTransport struct{ got chan string }

func (s subjectTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	s.got <- r.Header.Get("X-Gaia-Subject")
	return &http.Response{StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{},
		Body: http.NoBody, Request: r}, nil
}

// TestAnonymousIPv6CountsByNetwork: anonymous IPv6 callers count by
// their /64, which one host may take any address of; IPv4 callers, and
// IPv4 in IPv6, by address.
func TestAnonymousIPv6CountsByNetwork(t *testing.T) {
	tr := subjectTransport{got: make(chan string, 1)}
	up, _ := url.Parse("http://upstream.invalid")
	id := *testIdentity()
	id.Trusted = nil
	p := New(up, &fakeDecider{decide: allowAll}, &Settings{Policy: testPolicy(t), Identity: id}, &Options{Transport: tr, Logf: t.Logf})
	for remote, want := range map[string]string{
		"[2001:db8:1:2::5]:5000":      "ip:2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::9]:6000": "ip:2001:db8:1:2::/64",
		"[2001:db8:1:3::5]:5000":      "ip:2001:db8:1:3::/64",
		"203.0.113.7:5000":            "ip:203.0.113.7",
		"[::ffff:203.0.113.8]:5000":   "ip:203.0.113.8",
	} {
		r := httptest.NewRequest("GET", "/x", nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		p.ServeHTTP(w, r)
		if w.Code != 200 {
			t.Fatalf("%s: status %d %s", remote, w.Code, w.Body)
		}
		if got := <-tr.got; got != want {
			t.Errorf("anonymous caller at %s counted as %q, want %q", remote, got, want)
		}
	}
}

// TestSubjectFromHeaders: the subject the proxy charges for header
// spellings an upstream reads as a key or a client: "Bearer" then a tab
// is the key (an upstream splitting on white space takes it as one); an
// empty key header is skipped for the next; a trusted balancer's
// X-Forwarded-For hop with a port is its address.
func TestSubjectFromHeaders(t *testing.T) {
	tr := subjectTransport{got: make(chan string, 1)}
	up, _ := url.Parse("http://upstream.invalid")
	p := New(up, &fakeDecider{decide: allowAll}, &Settings{Policy: testPolicy(t), Identity: *testIdentity()}, &Options{Transport: tr, Logf: t.Logf})
	tests := []struct {
		name    string
		headers map[string][]string
		subject string
	}{
		{"bearer and a tab", map[string][]string{"Authorization": {"Bearer\tsecret-1"}}, "key:k1"},
		{"empty x-api-key, then bearer", map[string][]string{"X-Api-Key": {""}, "Authorization": {"Bearer secret-1"}}, "key:k1"},
		{"xff ipv4 with a port", map[string][]string{"X-Forwarded-For": {"1.2.3.4:5678"}}, "ip:1.2.3.4"},
		{"xff ipv6 with a port", map[string][]string{"X-Forwarded-For": {"[2001:db8:1:2::1]:443"}}, "ip:2001:db8:1:2::/64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/x", nil)
			r.RemoteAddr = "127.0.0.1:5000"
			for k, vs := range tc.headers {
				r.Header[k] = vs
			}
			w := httptest.NewRecorder()
			p.ServeHTTP(w, r)
			if w.Code != 200 {
				t.Fatalf("status %d %s, want 200", w.Code, w.Body)
			}
			if got := <-tr.got; got != tc.subject {
				t.Errorf("subject %q, want %q", got, tc.subject)
			}
		})
	}
}
