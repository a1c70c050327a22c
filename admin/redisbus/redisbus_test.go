package redisbus_test

import (
	"testing"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/admin/bustest"
	"github.com/gaia-proxy/gaia-proxy/admin/redisbus"
	"github.com/gaia-proxy/gaia-proxy/internal/testenv"
)

func TestBus(t *testing.T) {
	rdb := testenv.Redis(t)
	channel := testenv.Prefix(t) + "live"
	bustest.Run(t, func(*testing.T) admin.Bus { return redisbus.New(rdb, channel) })
}

// TestRoundTrip: a message of MaxBusMessage bytes arrives whole, on its
// channel only.
func TestRoundTrip(t *testing.T) {
	rdb := testenv.Redis(t)
	prefix := testenv.Prefix(t)
	bustest.RunIsolation(t, redisbus.New(rdb, prefix+"mine"), redisbus.New(rdb, prefix+"other"))
}
