package admin_test

import (
	"testing"

	"github.com/gaia-proxy/gaia-proxy/admin"
	"github.com/gaia-proxy/gaia-proxy/admin/bustest"
)

func TestLocalBus(t *testing.T) {
	bus := new(admin.LocalBus)
	bustest.Run(t, func(*testing.T) admin.Bus { return bus })
}
