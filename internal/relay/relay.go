// Package relay is a TCP relay that tests put between gaia-proxy and a
// service (Redis, PostgreSQL) and cut to simulate an outage.
package relay

import (
	"net"
	"sync"
	"testing"
)

// Relay forwards loopback connections to a target until cut.
type Relay struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	cut    bool
	frozen chan struct{} // closed when not frozen
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// New starts a relay to target on a free loopback port; it stops when the
// test ends.
func New(t testing.TB, target string) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{ln: ln, target: target, conns: map[net.Conn]struct{}{}, frozen: make(chan struct{})}
	close(r.frozen)
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.close)
	return r
}

// Addr is the relay's address, to give the client instead of target's.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Cut drops every open connection and refuses new ones, as if the service
// died.
func (r *Relay) Cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cut = true
	for c := range r.conns {
		c.Close()
	}
	select { // wake frozen copiers: their connections are gone
	case <-r.frozen:
	default:
		close(r.frozen)
	}
}

// Freeze keeps connections open but stops moving bytes, as if the
// service hung: clients wait until their own timeouts.
func (r *Relay) Freeze() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.frozen:
		r.frozen = make(chan struct{})
	default:
	}
}

// Restore lets connections through again, after Cut or Freeze.
func (r *Relay) Restore() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cut = false
	select {
	case <-r.frozen:
	default:
		close(r.frozen)
	}
}

// thawed returns a channel closed while bytes may move.
func (r *Relay) thawed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.frozen
}

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.cut {
			r.mu.Unlock()
			c.Close()
			continue
		}
		r.mu.Unlock()
		r.wg.Add(1)
		go r.pipe(c)
	}
}

func (r *Relay) track(c net.Conn, add bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if add {
		if r.cut {
			return false
		}
		r.conns[c] = struct{}{}
	} else {
		delete(r.conns, c)
	}
	return true
}

func (r *Relay) pipe(c net.Conn) {
	defer r.wg.Done()
	defer c.Close()
	up, err := net.Dial("tcp", r.target)
	if err != nil {
		return
	}
	defer up.Close()
	if !r.track(c, true) || !r.track(up, true) {
		return
	}
	defer r.track(c, false)
	defer r.track(up, false)
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				<-r.thawed() // a frozen relay holds the bytes; Cut closes src and dst
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break // EOF, or a cut connection: nothing to report
			}
		}
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	<-done
}

func (r *Relay) close() {
	r.ln.Close()
	r.Cut()
	r.wg.Wait()
}
