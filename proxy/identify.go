package proxy

import (
	"crypto/sha256"
	"errors"
	"net/http"
	"net/netip"
	"strings"

	"github.com/gaia-proxy/gaia-proxy/internal/credential"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// Identity says how callers are recognised (SPEC §4.1).
type Identity struct {
	// APIKeyHeaders are tried in order; the first one with a value
	// carries the key. "Authorization" is read as "Bearer <key>".
	APIKeyHeaders []string
	// UserHeader names the caller's user, believed only from Trusted peers.
	UserHeader string
	// Trusted peers may assert UserHeader and X-Forwarded-For.
	Trusted []netip.Prefix
	// RejectAnonymous answers 401 to callers with neither key nor user,
	// instead of limiting them by IP.
	RejectAnonymous bool
	// StripAPIKey keeps the API key header from the upstream.
	StripAPIKey bool
}

var (
	errMalformedKey = errors.New("malformed API key")
	errNoKey        = errors.New("no API key")
)

// peer is the connection's remote end and the client it speaks for.
type peer struct {
	addr    netip.Addr
	trusted bool
	// client is the caller's address: addr, or for a trusted peer the
	// nearest untrusted hop of X-Forwarded-For.
	client netip.Addr
}

func (id *Identity) isTrusted(a netip.Addr) bool {
	for _, p := range id.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// peerOf finds who sent r. A trusted peer's X-Forwarded-For is walked
// from the right, skipping trusted hops; the first untrusted hop is the
// client. A hop that does not parse (parseHop) ends the walk, so garbage
// never becomes an identity: the nearest hop we could read stands instead.
func (id *Identity) peerOf(r *http.Request) peer {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		// Not a TCP peer (tests, unix sockets): nobody to trust.
		a, _ := netip.ParseAddr(r.RemoteAddr)
		return peer{addr: a.Unmap(), client: a.Unmap()}
	}
	p := peer{addr: ap.Addr().Unmap()}
	p.trusted = id.isTrusted(p.addr)
	p.client = p.addr
	if !p.trusted {
		return p
	}
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		list := hops[i]
		for list != "" {
			var hop string
			if j := strings.LastIndexByte(list, ','); j >= 0 {
				hop, list = list[j+1:], list[:j]
			} else {
				hop, list = list, ""
			}
			a, ok := parseHop(strings.TrimSpace(hop))
			if !ok {
				return p
			}
			p.client = a.Unmap()
			if !id.isTrusted(p.client) {
				return p
			}
		}
	}
	return p
}

// parseHop reads one X-Forwarded-For entry: an IP address, a bracketed
// IPv6 address, or either with a port, which it drops ("1.2.3.4:5678",
// "[2001:db8::1]:443": Azure Application Gateway appends the client's
// port). An IPv6 address with a port must be bracketed: "2001:db8::1:443"
// is an address.
func parseHop(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a, true
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		a, err := netip.ParseAddr(s[1 : len(s)-1])
		return a, err == nil && a.Is6()
	}
	ap, err := netip.ParseAddrPort(s)
	return ap.Addr(), err == nil
}

// blank reports whether vals carry no value: none, or only empty or
// white-space (SP, HTAB) ones.
func blank(vals []string) bool {
	for _, v := range vals {
		if strings.Trim(v, " \t") != "" {
			return false
		}
	}
	return true
}

// notVisible reports whether r is not visible ASCII: what some upstream
// may split an Authorization value on (Python's str.split takes the
// Latin-1 "\xa0" and "\x85" as white space, JavaScript's /\s/ "\xa0").
func notVisible(r rune) bool { return r <= ' ' || r >= 0x7f }

// apiKey returns the presented key and the header that carried it,
// errNoKey when no key header has a value (SPEC §4.1: a header that is
// empty or white space is skipped for the next), or errMalformedKey for
// an empty, repeated or unprintable key.
func (id *Identity) apiKey(h http.Header) (key, header string, err error) {
	for _, name := range id.APIKeyHeaders {
		vals := h.Values(name)
		if blank(vals) {
			continue
		}
		if len(vals) > 1 {
			return "", name, errMalformedKey
		}
		v := vals[0]
		if strings.EqualFold(name, "Authorization") {
			// Any run of SP and HTAB (RFC 9110 white space) ends the
			// scheme: an upstream splitting on white space (Django REST
			// framework) reads "Bearer\t<key>" as the key, so we must
			// too, or its limits are never charged. A value whose first
			// word, split on anything not visible ASCII, is Bearer is
			// ours: glued to its key any other way ("Bearer\xa0<key>"),
			// it is malformed, not another scheme to pass upstream.
			word := strings.TrimLeftFunc(v, notVisible)
			if i := strings.IndexFunc(word, notVisible); i >= 0 {
				word = word[:i]
			}
			if !strings.EqualFold(word, "Bearer") {
				// Another scheme (Basic, ...) is the upstream's business.
				continue
			}
			v = strings.Trim(v, " \t")
			scheme, rest := v, ""
			if i := strings.IndexAny(v, " \t"); i >= 0 {
				scheme, rest = v[:i], v[i:]
			}
			if !strings.EqualFold(scheme, "Bearer") {
				return "", name, errMalformedKey
			}
			v = rest
		}
		v = strings.TrimSpace(v)
		if credential.CheckKey(v) != nil {
			return "", name, errMalformedKey
		}
		return v, name, nil
	}
	return "", "", errNoKey
}

// errRepeatedUser is a user header sent more than once: which one the
// upstream reads is its own business, so we count neither.
var errRepeatedUser = errors.New("is repeated")

// userID returns the user named by the user header when the peer is
// trusted and the header is present and not blank; err says what is
// wrong with a user id that breaks credential.CheckUserID, or that the
// header is repeated. A blank header names nobody, as if it were absent:
// a gateway may send its user variable empty for anonymous callers.
func (id *Identity) userID(h http.Header, p peer) (user string, ok bool, err error) {
	if id.UserHeader == "" || !p.trusted {
		return "", false, nil
	}
	vals := h.Values(id.UserHeader)
	if len(vals) > 1 {
		return "", false, errRepeatedUser
	}
	var v string
	if len(vals) == 1 {
		v = strings.TrimSpace(vals[0])
	}
	if v == "" {
		return "", false, nil
	}
	if err := credential.CheckUserID(v); err != nil {
		return "", false, err
	}
	return v, true, nil
}

// identify resolves the caller and the route, and answers 401 for bad
// or missing credentials (SPEC §4.1, §4.2), 400 for a trusted peer's
// user id that breaks credential.CheckUserID.
func (p *Proxy) identify(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x := exchangeFrom(r.Context())
		s := x.settings
		x.peer = s.Identity.peerOf(r)
		key, header, err := s.Identity.apiKey(r.Header)
		switch {
		case err == errNoKey:
			user, ok, uerr := s.Identity.userID(r.Header, x.peer)
			if uerr != nil {
				// Not anonymous: the peer we trust named a user, just not
				// one we can count. Limiting it by IP instead would hide
				// the gateway's bug under another subject's limits.
				msg := "the user id in " + s.Identity.UserHeader + " " + uerr.Error()
				if uerr != errRepeatedUser {
					msg += ": " + credential.UserIDRule
				}
				p.report(r, x, quota.Unauthorized, 0)
				p.fail(w, r, http.StatusBadRequest, "invalid_user_id", msg, nil)
				return
			}
			if ok {
				x.subject = s.Policy.ForUser(user)
			} else if s.Identity.RejectAnonymous {
				p.report(r, x, quota.Unauthorized, 0)
				p.fail(w, r, http.StatusUnauthorized, "missing_credentials", "an API key or user is required", nil)
				return
			} else {
				x.subject = s.Policy.ForIP(limiter.ClientKey(x.peer.client))
			}
		case err != nil:
			p.report(r, x, quota.Unauthorized, 0)
			p.fail(w, r, http.StatusUnauthorized, "invalid_api_key", "the API key in "+header+" is malformed", nil)
			return
		default:
			subj, ok := s.Policy.LookupKey(sha256.Sum256([]byte(key)))
			if !ok {
				p.report(r, x, quota.Unauthorized, 0)
				p.fail(w, r, http.StatusUnauthorized, "invalid_api_key", "the API key in "+header+" is not known", nil)
				return
			}
			x.subject, x.keyHeader = subj, header
		}
		// Routes match the cleaned path (limiter.CleanPath: "//" collapsed,
		// "." and ".." resolved, no trailing slash), so no spelling of a
		// path escapes its route's limits or borrows an exempt route's
		// prefix ("/public/../api/confirm" is "/api/confirm"). The request
		// is still forwarded as the client sent it: rewriting it could
		// change what a strict upstream serves (a meaningful trailing
		// slash, an encoded "%2F"), and an upstream that normalises lands
		// on the same cleaned path we matched and charged.
		x.route = s.Policy.Match(r.Method, r.URL.Path)
		x.exempt = x.route != nil && x.route.Exempt
		x.cost = limiter.Cost(x.route)
		next.ServeHTTP(w, r)
	})
}
