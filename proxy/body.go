package proxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// minBodyRate is the slowest a client may send a request body, in bytes
// per second on average over a span (boundedBody.Read): each byte
// received moves the body's deadline 1/minBodyRate s later (Apache
// mod_reqtimeout's MinRate). A client at 1 KB/s may upload for ever;
// one that sends a byte every few seconds soon runs out of time.
const minBodyRate = 500

// perByte is how much later each byte received moves the deadline.
const perByte = time.Second / minBodyRate

// boundBody bounds the reading of r's body (ServeHTTP asks only for a
// request that has one, so a GET pays nothing) against a client that
// stalls or trickles it (slowloris on the body): the body must arrive
// at minBodyRate on average, with a timeout's grace, and no Read may
// wait longer than the timeout (boundedBody.Read says exactly how). It
// sets the connection's read deadline before each Read, so a Read that
// waits past the deadline fails, and the round trip with it;
// upstreamError then answers 408. Any other failed Read is kept too
// (readFailed), so that a body the client framed wrong (a bad chunk
// size, say) is answered 400, not taken for the upstream's failure. It
// replaces r.Body, so r
// must be the handler's own copy; it returns nil, and leaves r alone,
// when the body cannot be bounded.
//
// The deadline is set at once, timeout from now, then restarted by the
// first Read, so that it also bounds what the server reads of a body
// nobody read: before a 401 or 429, or a 502, goes out, the server reads
// what is left of a small body (up to 256 KiB) to keep the connection,
// and without a deadline it would wait on a stalled client for ever.
//
// Over HTTP/2 the deadline is the stream's. A ResponseWriter that cannot
// set one (ErrNotSupported: a test's recorder, a wrapper without Unwrap)
// leaves the body unbounded, and the request goes on as before. The
// deadline replaces a server's ReadTimeout, which gaia-proxy's own
// server does not set: it would cut long uploads. A WebSocket handshake
// is a GET without a body, so never bounded; an upgrade that does carry
// one is released at the 101 (modifyResponse), and the hijack that
// follows clears the connection's deadlines.
//
// The clock runs while the proxy writes the body to the upstream too
// (mod_reqtimeout's does as well): an upstream that takes a body slower
// than minBodyRate, yet never stalls a write for the upstream timeout,
// would have its client answered 408.
func (p *Proxy) boundBody(w http.ResponseWriter, r *http.Request) *boundedBody {
	deadline := time.Now().Add(p.timeout) // the network's clock, not p.now
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(deadline) != nil {
		return nil
	}
	b := &boundedBody{ReadCloser: r.Body, rc: rc, timeout: p.timeout, deadline: deadline, set: deadline}
	r.Body = b
	return b
}

// bodyState is where the reading of a bounded body stands.
type bodyState int

const (
	bodyReading  bodyState = iota
	bodyEnded              // EOF: the deadline is cleared
	bodyFailed             // a Read failed: the deadline stays
	bodyReleased           // the handler returned or the connection was hijacked
)

// boundedBody is a request body that must arrive in time (boundBody).
// Only its Reads in the reading state touch the connection's deadline,
// and only they may: after the handler returns the connection belongs to
// the server again, and a Read may still come from the transport's
// writing goroutine, which outlives the handler when the upstream
// answered before reading the whole body.
type boundedBody struct {
	io.ReadCloser
	rc      *http.ResponseController // sets the connection's deadline
	timeout time.Duration

	mu       sync.Mutex // Read, release and timedOut run on different goroutines
	state    bodyState
	inRead   bool
	n        int64     // bytes received
	span     time.Time // when the current span began (see Read)
	spanN    int64     // bytes received in it
	deadline time.Time // when the body is due, as of the last Read
	set      time.Time // the connection's read deadline
	err      error     // why a Read failed, in state bodyFailed
}

// Read reads the body with the connection's read deadline at the time
// the body is due: a span's start plus the timeout plus perByte for
// each byte received in the span, and no later than a timeout from
// now. A span lasts until a Read a timeout or more after its start finds
// the client ahead of minBodyRate over it; the next starts then, from
// nothing. So credit earned by a fast start is spent within a span, and
// a client that then trickles falls behind in the next.
func (b *boundedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	switch b.state {
	case bodyEnded:
		// The body is over; the server may have closed it since, and
		// a read of a closed body fails (the transport reads once more
		// after a body of known length, and would drop the upstream's
		// answer on that error).
		b.mu.Unlock()
		return 0, io.EOF
	case bodyFailed, bodyReleased:
		b.mu.Unlock()
		return b.ReadCloser.Read(p)
	}
	now := time.Now()
	switch el := now.Sub(b.span); {
	case b.span.IsZero():
		b.span = now
	case el >= b.timeout && time.Duration(b.spanN)*perByte >= el:
		b.span, b.spanN = now, 0
	}
	b.deadline = b.span.Add(b.timeout + time.Duration(b.spanN)*perByte)
	if idle := now.Add(b.timeout); idle.Before(b.deadline) {
		b.deadline = idle
	}
	// Moving the connection's deadline is a system call and a timer
	// reset: it moves only when the one set is earlier than the body is
	// due, or later by more than a slack, and then to a slack later. So
	// a body is cut between its due time and a slack after it, and a
	// steady upload moves the deadline about once a slack.
	if slack := b.timeout / 8; b.set.Before(b.deadline) || b.set.Sub(b.deadline) > slack {
		b.set = b.deadline.Add(slack)
		b.setDeadline(b.set) // if the connection is gone, so is the Read
	}
	b.inRead = true
	b.mu.Unlock()

	n, err := b.ReadCloser.Read(p)

	b.mu.Lock()
	defer b.mu.Unlock()
	b.inRead = false
	b.n += int64(n)
	b.spanN += int64(n)
	if err == nil || b.state != bodyReading {
		return n, err
	}
	if err == io.EOF {
		// The next reads are the server's: the next request's, or its
		// background read that notices a client leaving (which the
		// server starts at EOF, with no deadline of its own; ours would
		// cancel the request when it passed).
		b.state = bodyEnded
		b.setDeadline(time.Time{})
		return n, err
	}
	// Any other error: the connection will not carry another request,
	// and the deadline stays, so that the server's and the transport's
	// own reads of what is left of the body (Close reads up to 256 KiB)
	// fail at once rather than wait on a client that sends nothing.
	b.state, b.err = bodyFailed, err
	return n, err
}

func (b *boundedBody) setDeadline(t time.Time) { b.rc.SetReadDeadline(t) }

// release ends b's hold on the connection's deadline, when the handler
// returns or the connection is about to be hijacked (101), and gives
// what the server does with the connection next a deadline of its own,
// a timeout from now. Not none: after the handler, the server reads what
// is left of an unread body (up to 256 KiB) to keep the connection, and
// without a deadline it would wait on a stalled client for ever. Not
// the one in force, which may have passed: the server also reads from a
// connection it closes, while its answer reaches a client still sending
// a body too large to read, and a read that failed at once would have it
// close at once, the client's unread answer lost to the reset. Before
// reading a next request the server sets its own read deadline (the idle
// timeout, then ReadHeaderTimeout); a hijack clears it.
func (b *boundedBody) release() {
	b.mu.Lock()
	if b.state == bodyReading {
		b.state = bodyReleased
		b.setDeadline(time.Now().Add(b.timeout))
	}
	b.mu.Unlock()
}

// timedOut returns, when the body did not arrive in time, an error that
// says so; nil otherwise. The Read that timed out may not have returned
// yet: the server cancels the request's context on the connection's read
// error, before the error reaches Read, and the round trip can fail on
// the cancellation first. A Read still waiting past its deadline counts.
func (b *boundedBody) timedOut() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.state == bodyFailed && errors.Is(b.err, os.ErrDeadlineExceeded):
		return fmt.Errorf("request body: %d bytes by the deadline: %w", b.n, b.err)
	case b.state == bodyReading && b.inRead && !time.Now().Before(b.deadline):
		return fmt.Errorf("request body: %d bytes by the deadline", b.n)
	}
	return nil
}

// readFailed returns the error a Read of the body failed with, other
// than a timeout (timedOut): the client's body could not be read, most
// often because its framing is broken ("invalid byte in chunk length",
// "malformed chunked encoding"). Nil when no Read failed. A client that
// hung up fails a Read too, but the server cancels the request's context
// before that Read returns (upstreamError looks at that first).
func (b *boundedBody) readFailed() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == bodyFailed && !errors.Is(b.err, os.ErrDeadlineExceeded) {
		return b.err
	}
	return nil
}
