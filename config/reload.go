package config

import (
	"reflect"
	"strings"
)

// RestartRequired lists the keys whose change from prev to next a reload
// cannot apply, so that the caller can refuse the reload and say which
// keys need a restart. Those are the keys read once at start to open
// listeners, clients and stores: listen, upstream, upstream_timeout,
// shutdown_timeout, admin.*, redis.*, database.url, data_dir,
// quota.flush_interval and quota.timezone. Policy reloads: identity.*,
// defaults.plan, shadow, plans, users, keys, routes and alerts.
//
// quota.timezone is restart-only because it moves the start of every
// period, hence which counter a quota charges: reloaded, every subject's
// usage of the current day, week or month would start again, and the
// runtime rules, read in the old zone, would keep it.
//
// admin.token is restart-only on purpose: a rotated token must not leave
// the old one valid anywhere, and a restart also closes WebSocket streams
// opened with it, which a reload would not.
func RestartRequired(prev, next *Config) []string {
	var keys []string
	p, n := reflect.ValueOf(prev).Elem(), reflect.ValueOf(next).Elem()
	for _, l := range leafKeys(p.Type(), "", nil) {
		section, _, _ := strings.Cut(l.key, ".")
		switch {
		case section == "identity", section == "defaults", section == "shadow":
			continue
		}
		a, b := p.FieldByIndex(l.index), n.FieldByIndex(l.index)
		if a.Kind() == reflect.Slice && a.Len() == 0 && b.Len() == 0 {
			continue // nil and empty lists are the same setting
		}
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			keys = append(keys, l.key)
		}
	}
	return keys
}
