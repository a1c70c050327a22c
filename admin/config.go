package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gaia-proxy/gaia-proxy/internal/credential"
	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// limitsView is a rate and a quota list in their JSON form (see
// quota.SpecJSON): null inherits, [] means none.
type limitsView struct {
	Rate  []quota.SpecJSON `json:"rate"`
	Quota []quota.SpecJSON `json:"quota"`
}

func viewLimits(l limiter.Limits) limitsView {
	return limitsView{Rate: quota.EncodeList(l.Rate), Quota: quota.EncodeList(l.Quota)}
}

// configView is the body of GET /api/admin/quotas/config. Keys show
// their id, user and plan, never their secret or its hash.
type configView struct {
	DefaultPlan   string      `json:"default_plan"`
	AnonymousPlan string      `json:"anonymous_plan"`
	Shadow        bool        `json:"shadow"`
	Plans         []planView  `json:"plans"`
	Users         []userView  `json:"users"`
	Keys          []keyView   `json:"keys"`
	Routes        []routeView `json:"routes"`
	Rules         []ruleView  `json:"rules"`
	// Warning says that Rules are those this replica holds, the store
	// being unreadable: what is in force here, perhaps not the latest.
	Warning string `json:"warning,omitempty"`
}

// planView is a configured plan. Rule, like that of users and keys, is
// the id of a runtime rule in force on top of the configured limits.
type planView struct {
	Name string `json:"name"`
	limitsView
	Rule string `json:"rule,omitempty"`
}

// userView is a configured user; Plan is the one in force (the default
// plan when the user names none).
type userView struct {
	ID   string `json:"id"`
	Plan string `json:"plan"`
	limitsView
	Rule string `json:"rule,omitempty"`
}

// keyView is a configured key; Plan is the one in force; Rate and Quota
// are its own lists (null: inherited from its user or plan).
type keyView struct {
	ID   string `json:"id"`
	User string `json:"user,omitempty"`
	Plan string `json:"plan"`
	limitsView
	Rule string `json:"rule,omitempty"`
}

type routeView struct {
	Name    string   `json:"name"`
	Methods []string `json:"methods"`
	Path    string   `json:"path"`
	Cost    int64    `json:"cost"`
	Exempt  bool     `json:"exempt"`
	limitsView
}

// ruleView is a runtime rule; Expired rules stay stored but no longer
// apply.
type ruleView struct {
	ID      string `json:"id"`
	Subject string `json:"subject"`
	limitsView
	ExpiresAt *time.Time `json:"expires_at"` // null: never
	Expired   bool       `json:"expired"`
}

func (s *Server) viewRule(r limiter.Rule) ruleView {
	v := ruleView{ID: r.ID, Subject: r.Subject, limitsView: viewLimits(r.Limits)}
	if !r.ExpiresAt.IsZero() {
		t := r.ExpiresAt.UTC()
		v.ExpiresAt, v.Expired = &t, !s.now().Before(t)
	}
	return v
}

// getConfig answers GET /api/admin/quotas/config: the policy in force
// and the runtime rules, read from the store when there is one (it is
// shared by every replica), else those the policy holds.
func (s *Server) getConfig(w http.ResponseWriter, r *http.Request) error {
	if _, err := newParams(r.URL.Query()); err != nil {
		return err
	}
	pol, err := s.needPolicy()
	if err != nil {
		return err
	}
	cfg := pol.Config()
	rules, warning := cfg.Rules, ""
	if s.store != nil {
		ctx, cancel := storeContext(r.Context(), storeTime)
		stored, err := s.store.Rules(ctx, nil)
		cancel()
		if err != nil {
			// The configuration is still known, and so are the rules in
			// force here (SPEC §6: the proxy rides out a database outage).
			s.logf("admin: reading runtime rules: %v", err)
			warning = "the database did not answer: rules are those in force on this replica, which may miss the latest changes"
		} else {
			rules = stored
		}
	}
	v := configView{DefaultPlan: cfg.DefaultPlan, AnonymousPlan: cfg.AnonymousPlan, Shadow: cfg.Shadow,
		Plans: []planView{}, Users: []userView{}, Keys: []keyView{}, Routes: []routeView{}, Rules: []ruleView{}, Warning: warning}
	live := map[string]string{} // subject → id of its rule in force
	for _, rule := range rules {
		rv := s.viewRule(rule)
		if !rv.Expired {
			live[rule.Subject] = rule.ID
		}
		v.Rules = append(v.Rules, rv)
	}
	for _, p := range cfg.Plans {
		v.Plans = append(v.Plans, planView{Name: p.Name, limitsView: viewLimits(p.Limits), Rule: live["plan:"+p.Name]})
	}
	for _, u := range cfg.Users {
		v.Users = append(v.Users, userView{ID: u.ID, Plan: pol.ForUser(u.ID).Plan, limitsView: viewLimits(u.Limits), Rule: live["user:"+u.ID]})
	}
	for _, k := range cfg.Keys {
		sub, _ := pol.KeyByID(k.ID)
		v.Keys = append(v.Keys, keyView{ID: k.ID, User: k.User, Plan: sub.Plan, limitsView: viewLimits(k.Limits), Rule: live["key:"+k.ID]})
	}
	for _, rt := range cfg.Routes {
		methods := rt.Methods
		if methods == nil {
			methods = []string{}
		}
		v.Routes = append(v.Routes, routeView{Name: rt.Name, Methods: methods, Path: rt.Path, Cost: limiter.Cost(&rt),
			Exempt: rt.Exempt, limitsView: viewLimits(rt.Limits)})
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// ruleBody is the body of POST /api/admin/quotas/config. Rate and Quota
// are decoded element by element, so that errors name their index.
type ruleBody struct {
	Subject   string            `json:"subject"`
	Rate      []json.RawMessage `json:"rate"`
	Quota     []json.RawMessage `json:"quota"`
	ExpiresAt *string           `json:"expires_at"`
}

// invalidRule answers a *quota.InvalidError as a 400 naming its field;
// another error as it is.
func invalidRule(err error) error {
	var ie *quota.InvalidError
	if !errors.As(err, &ie) {
		return err
	}
	return badRequest("%s: %s", ie.Field, ie.Reason)
}

// parseRule checks a POST /api/admin/quotas/config body against the
// policy at now and returns the rule it asks for (without an id).
func parseRule(body []byte, pol *limiter.Policy, now time.Time) (limiter.Rule, error) {
	var b ruleBody
	if err := decodeObject(body, &b, ""); err != nil {
		return limiter.Rule{}, err
	}
	rule := limiter.Rule{Subject: b.Subject}
	if err := notSecret(pol, "subject", b.Subject); err != nil {
		return limiter.Rule{}, err
	}
	if err := quota.CheckSubject(b.Subject); err != nil {
		return limiter.Rule{}, invalidRule(err)
	}
	kind, id, _ := strings.Cut(b.Subject, ":")
	switch kind {
	case "key":
		if _, ok := pol.KeyByID(id); !ok {
			return limiter.Rule{}, badRequest("subject: key %q is not configured", short(id))
		}
	case "user":
		rule.Subject = limiter.CanonicalSubject(b.Subject) // user ids fold to lower case, as the Policy counts them
	case "plan":
		name, ok := planName(pol, id)
		if !ok {
			return limiter.Rule{}, badRequest("subject: plan %q is not configured", short(id))
		}
		rule.Subject = "plan:" + name // as the Policy looks rules up
	}
	if b.Rate == nil && b.Quota == nil {
		return limiter.Rule{}, badRequest("rate, quota: give at least one list ([] removes the limits, null or absent inherits them)")
	}
	for _, l := range []struct {
		field string
		raw   []json.RawMessage
		dst   *[]limiter.Spec
	}{{"rate", b.Rate, &rule.Limits.Rate}, {"quota", b.Quota, &rule.Limits.Quota}} {
		if l.raw == nil {
			continue
		}
		list := make([]quota.SpecJSON, len(l.raw))
		for i, raw := range l.raw {
			if err := decodeObject(raw, &list[i], fmt.Sprintf("%s[%d]", l.field, i)); err != nil {
				return limiter.Rule{}, err
			}
		}
		specs, err := quota.DecodeList(l.field, list, nil)
		if err != nil {
			return limiter.Rule{}, invalidRule(err)
		}
		*l.dst = specs
	}
	if b.ExpiresAt != nil {
		t, err := time.Parse(time.RFC3339Nano, *b.ExpiresAt)
		if err != nil {
			return limiter.Rule{}, badRequest("expires_at: must be RFC3339 (2026-03-08T12:00:00Z), got %q", short(*b.ExpiresAt))
		}
		if !t.After(now) {
			return limiter.Rule{}, badRequest("expires_at: must be in the future, got %q", short(*b.ExpiresAt))
		}
		rule.ExpiresAt = t.UTC()
	}
	return rule, nil
}

// planName returns the name pol defines a plan under, matching name as
// a Policy matches plan names: case-insensitively.
func planName(pol *limiter.Policy, name string) (string, bool) {
	for _, p := range pol.Config().Plans {
		if strings.EqualFold(p.Name, name) {
			return p.Name, true
		}
	}
	return "", false
}

// putRule answers POST /api/admin/quotas/config: it creates or replaces
// the runtime rule of a subject, records it in the audit log and applies
// it on this replica at once.
func (s *Server) putRule(w http.ResponseWriter, r *http.Request) error {
	pol, err := s.needPolicy()
	if err != nil {
		return err
	}
	if err := s.needStore(); err != nil {
		return err
	}
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	rule, err := parseRule(body, pol, s.now())
	if err != nil {
		return err
	}
	ctx, cancel := storeContext(r.Context(), storeTime)
	defer cancel()
	stored, err := s.store.PutRule(ctx, rule)
	switch {
	case errors.Is(err, quota.ErrInvalid): // parseRule checks what the store does; kept for safety
		return invalidRule(err)
	case err != nil:
		return storeError(ctx, "storing the rule", err)
	}
	v := s.viewRule(stored)
	s.audit(r, "rule.put", stored.Subject, v)
	s.changed()
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// deleteRule answers DELETE /api/admin/quotas/config/{id}.
func (s *Server) deleteRule(w http.ResponseWriter, r *http.Request) error {
	if err := s.needStore(); err != nil {
		return err
	}
	id := r.PathValue("id")
	if !credential.IsText(id) { // no rule has such an id, and a database would refuse it
		return notFoundError("no runtime rule has id %q", short(id))
	}
	ctx, cancel := storeContext(r.Context(), storeTime)
	defer cancel()
	rules, err := s.store.Rules(ctx, nil)
	if err != nil {
		return storeError(ctx, "reading runtime rules", err)
	}
	var gone limiter.Rule
	for _, rule := range rules {
		if rule.ID == id {
			gone = rule
		}
	}
	ctx, cancel = storeContext(r.Context(), storeTime)
	defer cancel()
	ok, err := s.store.DeleteRule(ctx, id)
	switch {
	case err != nil:
		return storeError(ctx, "deleting the rule", err)
	case !ok:
		return notFoundError("no runtime rule has id %q", short(id))
	}
	if gone.ID == "" {
		gone.ID = id // deleted between the read and the delete: audited by id alone
	}
	s.audit(r, "rule.delete", gone.Subject, s.viewRule(gone))
	s.changed()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// changed tells this replica that the rules changed.
func (s *Server) changed() {
	if s.rulesChanged != nil {
		s.rulesChanged()
	}
}
