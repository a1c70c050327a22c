package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// hashToken returns the SHA-256 of the admin token, nil for "" (open).
func hashToken(token string) *[sha256.Size]byte {
	if token == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(token))
	return &sum
}

// authorized reports whether r carries the admin token: as
// "Authorization: Bearer <token>" or, when fromQuery is set, as
// ?token=. Without a token configured every request is authorized.
//
// Both sides are hashed before a constant-time comparison, so neither
// the time taken nor an early exit on length tells anything about the
// token.
func (s *Server) authorized(r *http.Request, fromQuery bool) bool {
	if s.token == nil {
		return true
	}
	given, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok && fromQuery {
		given, ok = r.URL.Query().Get("token"), true
	}
	sum := sha256.Sum256([]byte(given))
	return ok && given != "" && subtle.ConstantTimeCompare(sum[:], s.token[:]) == 1
}

// requireToken wraps h so that it answers 401 JSON unless the request
// is authorized (see authorized). fromQuery also accepts the token as
// ?token=, for the WebSocket and the dashboard, since a browser cannot
// set headers on a WebSocket handshake.
func (s *Server) requireToken(h http.Handler, fromQuery bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r, fromQuery) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gaia-proxy admin"`)
			writeError(w, &apiError{Status: http.StatusUnauthorized, Code: "unauthorized",
				Message: "missing or wrong admin token: send Authorization: Bearer <admin.token>"})
			return
		}
		h.ServeHTTP(w, r)
	})
}
