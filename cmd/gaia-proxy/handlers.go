package main

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// handlers keeps track of the proxy's and the admin port's running
// handlers, so that the last flush at shutdown comes after what they
// record. A server's Close cuts connections but does not wait for
// handlers, and one it cut can run on: a request whose body nobody was
// reading when its connection closed never learns of it, and a hijacked
// connection (a proxied WebSocket) is not the server's to close. Such a
// handler may still charge a quota, record a refund, a violation or an
// audit entry.
//
// Every request's context derives from ctx (the servers' BaseContext),
// which cut cancels: what cut handlers wait on (the upstream, the
// limiter, the ledger) gives up, and they return.
type handlers struct {
	ctx    context.Context
	cancel context.CancelFunc

	n       atomic.Int64 // handlers running
	waiting atomic.Bool  // wait was called: done must look for idle

	mu   sync.Mutex
	idle chan struct{} // closed when n drops to 0, made by wait
}

func newHandlers() *handlers {
	ctx, cancel := context.WithCancel(context.Background())
	return &handlers{ctx: ctx, cancel: cancel}
}

// base is an http.Server's BaseContext.
func (hs *handlers) base(net.Listener) context.Context { return hs.ctx }

// track wraps h to count its running calls: an atomic add each way, the
// lock only once the shutdown waits.
func (hs *handlers) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs.n.Add(1)
		defer hs.done() // also when h panics (http.ErrAbortHandler)
		h.ServeHTTP(w, r)
	})
}

func (hs *handlers) done() {
	if hs.n.Add(-1) != 0 || !hs.waiting.Load() {
		return
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.n.Load() == 0 && hs.idle != nil {
		close(hs.idle)
		hs.idle = nil
	}
}

// cut cancels the context of every request, running or to come.
func (hs *handlers) cut() { hs.cancel() }

// wait waits until no handler runs, or until t, and returns how many
// still run.
func (hs *handlers) wait(t time.Time) int {
	hs.mu.Lock()
	// waiting is set before n is read: a done that takes n to 0 after
	// this read sees waiting, and closes idle once the lock is free.
	hs.waiting.Store(true)
	if hs.n.Load() == 0 {
		hs.mu.Unlock()
		return 0
	}
	if hs.idle == nil {
		hs.idle = make(chan struct{})
	}
	idle := hs.idle
	hs.mu.Unlock()
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-idle:
		return 0
	case <-timer.C:
	}
	return int(hs.n.Load())
}
