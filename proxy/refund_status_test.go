package proxy

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// TestRefundByStatus: a count: success quota is refunded when the
// upstream does not answer with a 2xx or 3xx (SPEC §3), so a 4xx is
// refunded like a 5xx, and a 2xx or 3xx is not.
func TestRefundByStatus(t *testing.T) {
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		if code == http.StatusFound {
			w.Header().Set("Location", "/elsewhere")
		}
		w.WriteHeader(code)
	})
	d := &fakeDecider{decide: allowAll}
	srv := newTestProxy(t, up, d, nil)
	// Its client must not follow the 302.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var refunds int64
	for _, tc := range []struct {
		status   int
		refunded bool
	}{
		{200, false}, {204, false}, {302, false}, {304, false},
		{400, true}, {404, true}, {429, true}, {499, true},
		{500, true}, {503, true},
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/status/"+strconv.Itoa(tc.status), nil)
		req.Header.Set("X-Api-Key", "secret-1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if tc.refunded {
			refunds++
		}
		if resp.StatusCode != tc.status || d.refunds.Load() != refunds {
			t.Errorf("upstream %d: answered %d, %d units refunded in all; want %d, %d", tc.status, resp.StatusCode, d.refunds.Load(), tc.status, refunds)
		}
	}
}
