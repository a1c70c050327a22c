package redisstore_test

import (
	"time"

	"github.com/gaia-proxy/gaia-proxy/quota"
)

// utcDay cuts time into UTC days.
var utcDay = quota.Calendar{Unit: quota.Daily, Loc: time.UTC}
