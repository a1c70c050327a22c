package admin

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"
)

// StartStream serves a Server of o and runs its stream until the test
// ends.
func StartStream(tb testing.TB, o *Options) (*Server, *httptest.Server) {
	tb.Helper()
	srv := New(o)
	ts := httptest.NewServer(srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Run(ctx)
	}()
	tb.Cleanup(func() {
		cancel()
		<-done
		ts.Close()
	})
	return srv, ts
}

// SetUsageReaders sets how many subjects the usage list reads at once,
// until the returned function restores it.
func SetUsageReaders(n int) (restore func()) {
	old := usageReaders
	usageReaders = n
	return func() { usageReaders = old }
}

// SetBodyTime sets how long a request body may take to arrive, until
// the returned function restores it.
func SetBodyTime(d time.Duration) (restore func()) {
	old := bodyTime
	bodyTime = d
	return func() { bodyTime = old }
}

// SetStoreTime sets how long an API request's call to the store may take
// (storeTime) and one that may read many rows (scanTime), until the
// returned function restores them.
func SetStoreTime(store, scan time.Duration) (restore func()) {
	oldStore, oldScan := storeTime, scanTime
	storeTime, scanTime = store, scan
	return func() { storeTime, scanTime = oldStore, oldScan }
}
