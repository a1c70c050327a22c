package config

import (
	"strings"
	"testing"
)

// TestCredentialsFollowTheProxysRule: a plain-text key or a user id the
// proxy would refuse at request time (credential.CheckKey, CheckUserID)
// is refused when the config is loaded, naming the key path and the
// problem, never the secret.
func TestCredentialsFollowTheProxysRule(t *testing.T) {
	const head = "upstream: http://127.0.0.1:9000\nplans: {anonymous: {}, free: {}}\n"
	long := strings.Repeat("u", 257)
	tests := []struct {
		name, yaml string
		want       []string // "" in want: no error
	}{
		{"good key", `keys: [{id: k, key: "s3cret-key"}]`, nil},
		{"key with a space", `keys: [{id: k, key: "my s3cret"}]`, []string{"keys[0].key: contains a space (an API key is 1 to 1024 visible ASCII"}},
		{"key with a tab", `keys: [{id: k, key: "my\ts3cret"}]`, []string{"keys[0].key: contains a control character"}},
		{"non-ASCII key", `keys: [{id: k, key: "clé-s3cret"}]`, []string{"keys[0].key: contains a non-ASCII character"}},
		{"long key", `keys: [{id: k, key: "s3cret` + strings.Repeat("x", 1024) + `"}]`, []string{"keys[0].key: is 1030 bytes, more than 1024"}},
		{"good users", `users: {"josé": {}, "alice smith": {}, "` + strings.Repeat("é", 128) + `": {}}` + "\n" + `keys: [{id: k, key: "s3cret", user: "Alice Smith"}]`, nil},
		{"user id too long", `users: {"` + long + `": {}}`, []string{`users: user id is 257 bytes, more than 256 (a user id is valid UTF-8 of 1 to 256 bytes`}},
		{"user id with a tab", `users: {"a\tb": {}}`, []string{`users: user id contains a control character`, `got "a\tb"`}},
		{"user id with a space around", `users: {" carol": {}}`, []string{`users: user id starts or ends with white space`}},
		{"key's user with a control", `keys: [{id: k, key: "s3cret", user: "bob\u0085"}]`, []string{`keys[0].user: contains a control character`}},
		{"key's user too long", `keys: [{id: k, key: "s3cret", user: "` + long + `"}]`, []string{`keys[0].user: is 257 bytes, more than 256`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load("gaia.yaml", []byte(head+tc.yaml+"\n"), LoadOptions{})
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("load: %v, want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("load: no error, want %q", tc.want)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("load: %v\nwant %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("a message shows the key: %v", err)
			}
		})
	}
}
