package proxy

import (
	"context"
	"net/http"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
)

// Middleware wraps a handler. In Chain(a, b)(h), a sees the request first.
type Middleware func(http.Handler) http.Handler

// Chain composes middlewares so that the first one runs first.
func Chain(mws ...Middleware) Middleware {
	return func(h http.Handler) http.Handler {
		for i := len(mws) - 1; i >= 0; i-- {
			h = mws[i](h)
		}
		return h
	}
}

// exchange is what the middlewares learn about one request, shared
// through its context so the request is copied only once.
type exchange struct {
	settings  *Settings
	start     time.Time
	forwarded time.Time // when the request left for the upstream
	peer      peer
	subject   limiter.Subject
	route     *limiter.Route
	exempt    bool
	// keyHeader is the header that carried the API key, if any.
	keyHeader string
	cost      int64
	decision  limiter.Decision
	decided   bool
	// headers are the rate-limit response headers, computed once.
	headers  [len(rateLimitNames)]header
	nheaders int
	shadow   string
	// body bounds the reading of the request body; nil when unbounded.
	body *boundedBody
}

// routeName is the name of the request's route, "" when none matched.
func (x *exchange) routeName() string {
	if x.route == nil {
		return ""
	}
	return x.route.Name
}

type exchangeKey struct{}

func withExchange(r *http.Request, x *exchange) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), exchangeKey{}, x))
}

func exchangeFrom(ctx context.Context) *exchange {
	x, _ := ctx.Value(exchangeKey{}).(*exchange)
	return x
}
