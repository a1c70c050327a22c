package credential

import (
	"strings"
	"testing"
)

func TestKey(t *testing.T) {
	for key, want := range map[string]string{
		"k1":                             "",
		"demo-free-key":                  "",
		strings.Repeat("k", MaxKeyLen):   "",
		"":                               "is empty",
		"my key":                         "contains a space",
		"a\tb":                           "contains a control character",
		"a\x7fb":                         "contains a control character",
		"clé":                            "contains a non-ASCII character",
		strings.Repeat("k", MaxKeyLen+1): "is 1025 bytes, more than 1024",
	} {
		err := CheckKey(key)
		if got := errString(err); got != want {
			t.Errorf("CheckKey(%.20q) = %q, want %q", key, got, want)
		}
	}
}

func TestUserID(t *testing.T) {
	for id, want := range map[string]string{
		"alice":                        "",
		"josé":                         "",
		"Alice Smith":                  "",
		"alice@example.com":            "",
		strings.Repeat("é", 128):       "",
		strings.Repeat("é", 128) + "x": "is 257 bytes, more than 256",
		"":                             "is empty",
		" alice":                       "starts or ends with white space",
		"alice\u00a0":                  "starts or ends with white space",
		"a\tb":                         "contains a control character",
		"a\x00b":                       "contains a control character",
		"a\u0085b":                     "contains a control character",
		"jos\xe9":                      "is not valid UTF-8",
	} {
		if got := errString(CheckUserID(id)); got != want {
			t.Errorf("CheckUserID(%q) = %q, want %q", id, got, want)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestIsText(t *testing.T) {
	for s, want := range map[string]bool{
		"": true, "alice": true, "José Núñez": true, "東京": true, "a b": true,
		"a\x00b": false, "a\tb": false, "a\x7fb": false, "a\u0085b": false,
		"a\xffb": false, "a\uFFFDb": false, "\xe2\x82": false,
	} {
		if got := IsText(s); got != want {
			t.Errorf("IsText(%q) = %v, want %v", s, got, want)
		}
	}
}
