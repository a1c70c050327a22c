package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// pace sends GET requests to target at a constant rate for d, over at
// most conns keep-alive connections, spreading them over users X-User-ID
// values, and prints the latency percentiles. A request's latency counts
// from when it was due, not from when a connection was free to send it,
// so a proxy that falls behind shows its queue (no coordinated omission).
// It prints "p99_ms N" last, for scripts.
func pace(target string, rate int, d time.Duration, conns, users int) error {
	if rate <= 0 || conns <= 0 || users <= 0 {
		return fmt.Errorf("pace: -rate, -conns and -users must be positive")
	}
	client := &http.Client{
		Transport: &http.Transport{MaxConnsPerHost: conns, MaxIdleConnsPerHost: conns},
		Timeout:   30 * time.Second,
	}
	n := int(d.Seconds() * float64(rate))
	due := make(chan time.Time, n)
	lat := make([][]time.Duration, conns)
	failed := make([]int, conns)
	var wg sync.WaitGroup
	for w := range conns {
		wg.Go(func() {
			for i := 0; ; i++ {
				at, ok := <-due
				if !ok {
					return
				}
				req, _ := http.NewRequestWithContext(context.Background(), "GET", target, nil)
				req.Header.Set("X-User-ID", "u"+strconv.Itoa((w+i*conns)%users))
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed[w]++
					continue
				}
				lat[w] = append(lat[w], time.Since(at))
			}
		})
	}
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		if wait := time.Until(at); wait > 0 {
			time.Sleep(wait)
		}
		due <- at
	}
	close(due)
	wg.Wait()
	all := slices.Concat(lat...)
	slices.Sort(all)
	fails := 0
	for _, f := range failed {
		fails += f
	}
	if len(all) == 0 {
		return fmt.Errorf("pace: all %d requests failed", fails)
	}
	q := func(p float64) float64 {
		return float64(all[min(len(all)-1, int(p*float64(len(all))))]) / 1e6
	}
	fmt.Printf("requests %d, failed %d, %.0f req/s sent\n", n, fails, float64(n)/time.Since(start).Seconds())
	fmt.Printf("p50_ms %.3f\np90_ms %.3f\nmax_ms %.3f\n", q(0.50), q(0.90), float64(all[len(all)-1])/1e6)
	fmt.Printf("p99_ms %.3f\n", q(0.99))
	if fails > 0 {
		return fmt.Errorf("pace: %d of %d requests failed", fails, n)
	}
	return nil
}
