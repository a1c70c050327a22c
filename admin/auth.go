package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
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
	given, ok := bearer(r.Header.Get("Authorization"))
	if !ok && fromQuery {
		given, ok = r.URL.Query().Get("token"), true
	}
	sum := sha256.Sum256([]byte(given))
	return ok && given != "" && subtle.ConstantTimeCompare(sum[:], s.token[:]) == 1
}

// bearer returns the credentials of an Authorization header value in
// the Bearer scheme. The scheme is matched in any case and may be
// followed by more than one space (RFC 9110 §11.1, §11.4).
func bearer(h string) (string, bool) {
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimLeft(rest, " "), true
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

// hostExempt are the paths served whatever the Host: probes (a
// Kubernetes httpGet probe sends Host <pod IP>:<port>) and scrapers
// name the machine by address, and neither path shows or changes
// anything a page could misuse.
var hostExempt = map[string]bool{"/health": true, "/metrics": true}

// checkHost refuses, with 421, a request to an open admin port (no
// token) whose Host does not name the loopback interface: a page whose
// domain was re-pointed at 127.0.0.1 (DNS rebinding) is same-origin
// with the admin port in the browser's eyes, and only its Host gives it
// away. With a token, the token guards every path and Host is free.
func (s *Server) checkHost(r *http.Request) *apiError {
	if s.token != nil || hostExempt[r.URL.Path] || loopbackHost(r.Host) {
		return nil
	}
	return &apiError{Status: http.StatusMisdirectedRequest, Code: "misdirected_request",
		Message: fmt.Sprintf("Host %q is not a loopback name: without admin.token this admin port answers only to "+
			"localhost, 127.0.0.0/8 and [::1] (set admin.token to reach it under another name)", short(r.Host))}
}

// loopbackHost reports whether a Host header value, with or without a
// port, is "localhost" or a loopback IP address.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}

// crossOrigin checks browsers' Sec-Fetch-Site and Origin headers: a
// state-changing request (any method but GET, HEAD and OPTIONS) from a
// page of another origin is refused, so that no web page can change
// the admin port's state behind its user's back.
var crossOrigin = http.NewCrossOriginProtection()

// checkWrite refuses a state-changing request sent by a page of another
// origin (403), and a POST, PUT or PATCH whose body is not declared
// JSON (415): an HTML form or a "simple" fetch, which a browser sends
// to any site without asking it first, cannot be JSON. The routes'
// fallback (404 or 405) takes any body, since it changes nothing.
func checkWrite(r *http.Request) *apiError {
	if err := crossOrigin.Check(r); err != nil {
		origin := r.Header.Get("Origin")
		if origin == "" {
			origin = "none"
		}
		return &apiError{Status: http.StatusForbidden, Code: "cross_origin",
			Message: fmt.Sprintf("%s %s: refused, the request comes from another site's page (Origin %q, Host %q)",
				r.Method, r.URL.Path, short(origin), short(r.Host))}
	}
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
	default:
		return nil
	}
	if r.Pattern == apiFallback {
		return nil
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == "application/json" {
		return nil
	}
	got := "none"
	if ct != "" {
		got = strconv.Quote(short(ct))
	}
	return &apiError{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
		Message: fmt.Sprintf("%s %s: Content-Type must be application/json, got %s", r.Method, r.URL.Path, got)}
}
