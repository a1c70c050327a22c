package relay

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// echo serves one line back per line received.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(line))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(addr string, wait time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err = bufio.NewReader(c).ReadString('\n')
	return err
}

func TestRelay(t *testing.T) {
	// Closed after the relay's own cleanup (cleanups run last first), so
	// that cleanup meets a frozen connection with a live client.
	var frozen net.Conn
	t.Cleanup(func() {
		if frozen != nil {
			frozen.Close()
		}
	})
	r := New(t, echo(t))
	if err := roundTrip(r.Addr(), 5*time.Second); err != nil {
		t.Fatalf("through the relay: %v", err)
	}
	r.Cut()
	if err := roundTrip(r.Addr(), 5*time.Second); err == nil {
		t.Fatal("a cut relay let a round trip through")
	}
	r.Restore()
	if err := roundTrip(r.Addr(), 5*time.Second); err != nil {
		t.Fatalf("after Restore: %v", err)
	}
	r.Freeze()
	if err := roundTrip(r.Addr(), 200*time.Millisecond); err == nil {
		t.Fatal("a frozen relay let a round trip through")
	}
	r.Restore()
	if err := roundTrip(r.Addr(), 5*time.Second); err != nil {
		t.Fatalf("after thawing: %v", err)
	}
	r.Freeze() // the cleanup must not hang on frozen connections
	c, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	frozen = c
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
}
