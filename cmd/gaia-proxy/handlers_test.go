package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestHandlersWaitAndCut: wait counts the handlers still running at its
// deadline, and cut ends those that wait on their request's context.
func TestHandlersWaitAndCut(t *testing.T) {
	hs := newHandlers()
	entered := make(chan struct{}, 2)
	srv := httptest.NewUnstartedServer(hs.track(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-r.Context().Done()
	})))
	srv.Config.BaseContext = hs.base
	srv.Start()
	defer srv.Close()
	if n := hs.wait(time.Now()); n != 0 {
		t.Fatalf("wait with nothing running: %d, want 0", n)
	}
	answered := make(chan error, 2)
	for range 2 {
		go func() {
			resp, err := http.Get(srv.URL)
			if err == nil {
				resp.Body.Close()
			}
			answered <- err
		}()
		<-entered
	}
	if n := hs.wait(time.Now().Add(50 * time.Millisecond)); n != 2 {
		t.Errorf("wait past its deadline: %d running, want 2", n)
	}
	hs.cut()
	if n := hs.wait(time.Now().Add(5 * time.Second)); n != 0 {
		t.Errorf("wait after cut: %d running, want 0", n)
	}
	for range 2 {
		if err := <-answered; err != nil {
			t.Errorf("a cut request: %v, want its (empty) answer", err)
		}
	}
}
