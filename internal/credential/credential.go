// Package credential holds the one rule for what a caller may present as
// an identity: an API key, or a user id asserted by a trusted peer. The
// proxy applies it to requests; config validation and the hash-key
// command apply it to what an operator writes, so that no configured key
// or user is one the proxy could never recognise. IsText is the rule
// under a user id, which subjects, limit names and the admin API's
// parameters follow too.
package credential

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxKeyLen bounds an API key, in bytes (all ASCII, so characters too).
const MaxKeyLen = 1024

// MaxUserIDLen bounds a user id, in bytes of its UTF-8.
const MaxUserIDLen = 256

// KeyRule describes a valid API key, for messages.
const KeyRule = "an API key is 1 to 1024 visible ASCII characters: no spaces, control or non-ASCII characters"

// UserIDRule describes a valid user id, for messages.
const UserIDRule = "a user id is valid UTF-8 of 1 to 256 bytes, without control characters or surrounding white space"

var (
	errEmpty      = errors.New("is empty")
	errSpace      = errors.New("contains a space")
	errControl    = errors.New("contains a control character")
	errNonASCII   = errors.New("contains a non-ASCII character")
	errNotUTF8    = errors.New("is not valid UTF-8")
	errSurrounded = errors.New("starts or ends with white space")
)

// CheckKey returns nil if key can be presented as an API key: 1 to
// MaxKeyLen visible ASCII characters (0x21 to 0x7e); else what is wrong
// with it ("contains a space"). The error never shows the key, and is
// made only for one too long: the proxy checks every request's key.
func CheckKey(key string) error {
	if key == "" {
		return errEmpty
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("is %d bytes, more than %d", len(key), MaxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c == ' ':
			return errSpace
		case c < ' ' || c == 0x7f:
			return errControl
		case c > 0x7f:
			return errNonASCII
		}
	}
	return nil
}

// CheckUserID returns nil if id can name a user: text (IsText), 1 to
// MaxUserIDLen bytes, and no white space at either end (the proxy trims the user
// header, so such an id could never arrive). Inner spaces and any other
// Unicode are allowed: "José Núñez" is a user id. Else it returns what is
// wrong ("is 300 bytes, more than 256").
func CheckUserID(id string) error {
	if id == "" {
		return errEmpty
	}
	if len(id) > MaxUserIDLen {
		return fmt.Errorf("is %d bytes, more than %d", len(id), MaxUserIDLen)
	}
	if !IsText(id) {
		if !utf8.ValidString(id) || strings.ContainsRune(id, utf8.RuneError) {
			return errNotUTF8
		}
		return errControl
	}
	if strings.TrimSpace(id) != id {
		return errSurrounded
	}
	return nil
}

// IsText reports whether s is valid UTF-8 without control characters
// (C0 with NUL, DEL and C1) or U+FFFD: what a user id, a subject, a limit's name or
// a query parameter may hold. PostgreSQL refuses NUL and invalid UTF-8 in
// text, and no header could carry them.
func IsText(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || r < 0xa0 {
			// Invalid UTF-8, or U+FFFD, which is what encoding/json makes
			// of it; or C1 (0x80 to 0x9f).
			return false
		}
		i += n
	}
	return true
}
