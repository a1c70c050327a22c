package main

import (
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/gaia-proxy/gaia-proxy/config"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/proxy"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// buildSettings copies a validated config into the proxy's settings.
func buildSettings(c *config.Config) (*proxy.Settings, error) {
	loc, err := time.LoadLocation(c.Quota.Timezone)
	if err != nil {
		return nil, fmt.Errorf("quota.timezone: %w", err)
	}
	b := &binder{loc: loc}
	pc := limiter.PolicyConfig{DefaultPlan: c.Defaults.Plan, Shadow: c.Shadow}
	for _, name := range slices.Sorted(maps.Keys(c.Plans)) {
		pc.Plans = append(pc.Plans, limiter.Plan{Name: name, Limits: b.limits(c.Plans[name].Limits)})
	}
	for _, id := range slices.Sorted(maps.Keys(c.Users)) {
		u := c.Users[id]
		pc.Users = append(pc.Users, limiter.User{ID: id, Plan: u.Plan, Limits: b.limits(u.Limits)})
	}
	for i, k := range c.Keys {
		sum, err := c.HashedKey(i)
		if err != nil {
			return nil, err
		}
		pc.Keys = append(pc.Keys, limiter.Key{ID: k.ID, Hash: sum, User: k.User, Plan: k.Plan, Limits: b.limits(k.Limits)})
	}
	for _, r := range c.Routes {
		pc.Routes = append(pc.Routes, limiter.Route{
			Name: r.Name, Methods: r.Methods, Path: r.Path, Cost: r.Cost, Exempt: r.Exempt, Limits: b.limits(r.Limits),
		})
	}
	if b.err != nil {
		return nil, b.err
	}
	pol, err := limiter.NewPolicy(pc)
	if err != nil {
		return nil, err
	}
	id := proxy.Identity{
		UserHeader:      http.CanonicalHeaderKey(c.Identity.UserHeader),
		RejectAnonymous: c.Identity.Anonymous == "reject",
		StripAPIKey:     c.Identity.StripAPIKey,
	}
	for _, h := range c.Identity.APIKeyHeaders {
		id.APIKeyHeaders = append(id.APIKeyHeaders, http.CanonicalHeaderKey(h))
	}
	for _, s := range c.Identity.TrustedCIDRs {
		p, err := netip.ParsePrefix(s) // Validate made every entry a canonical prefix
		if err != nil {
			return nil, fmt.Errorf("identity.trusted_cidrs: %w", err)
		}
		id.Trusted = append(id.Trusted, p)
	}
	return &proxy.Settings{Policy: pol, Identity: id}, nil
}

// binder converts config limits, keeping the first error.
type binder struct {
	loc *time.Location
	err error
}

func (b *binder) limits(l config.Limits) limiter.Limits {
	return limiter.Limits{Rate: b.specs(l.Rate), Quota: b.specs(l.Quota)}
}

// specs converts a list; nil stays nil ("inherit").
func (b *binder) specs(list []config.Limit) []limiter.Spec {
	if list == nil {
		return nil
	}
	out := make([]limiter.Spec, 0, len(list))
	for _, l := range list {
		s := limiter.Spec{
			Name:       l.Name,
			Limit:      l.Limit,
			Window:     l.Window,
			Scope:      scopes[l.Scope],
			Shadow:     l.Shadow,
			Refundable: l.Count == "success",
		}
		if l.Period != "" {
			p, err := quota.ParsePeriod(l.Period, b.loc)
			if err != nil && b.err == nil {
				b.err = err
			}
			s.Period = p
		}
		out = append(out, s)
	}
	return out
}

var scopes = map[string]limiter.Scope{
	"":       limiter.ScopeDefault,
	"key":    limiter.ScopeKey,
	"user":   limiter.ScopeUser,
	"global": limiter.ScopeGlobal,
}
