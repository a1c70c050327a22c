package admin

import (
	"errors"
	"net/http"
	"time"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// violationView is one violation as the API shows it; Limit has the
// shape of the limit in a 429 body.
type violationView struct {
	ID      string         `json:"id"`
	At      time.Time      `json:"at"`
	Subject string         `json:"subject"`
	KeyID   string         `json:"key_id,omitempty"`
	User    string         `json:"user,omitempty"`
	Plan    string         `json:"plan,omitempty"`
	Route   string         `json:"route,omitempty"`
	Method  string         `json:"method"`
	Path    string         `json:"path"`
	Limit   quota.LimitRef `json:"limit"`
	Kind    string         `json:"kind"` // rate_limited or quota_exceeded
	Shadow  bool           `json:"shadow"`
}

// violationList is the body of GET /api/admin/quotas/violations.
type violationList struct {
	Violations []violationView `json:"violations"`
	NextCursor string          `json:"next_cursor"` // "" after the last page
}

// parseViolationQuery reads the parameters of GET
// /api/admin/quotas/violations.
func parseViolationQuery(p params) (quota.ViolationQuery, error) {
	// Recorded user subjects carry the canonical id (limiter.CanonicalUser).
	q := quota.ViolationQuery{Subject: limiter.CanonicalSubject(p.str("subject")), Cursor: p.str("cursor")}
	var err error
	if q.Since, err = p.time("since", time.Time{}); err != nil {
		return q, err
	}
	if q.Until, err = p.time("until", time.Time{}); err != nil {
		return q, err
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until) {
		return q, badRequest("until: must be after since")
	}
	if q.Limit, err = p.integer("limit", 100, 1, 1000); err != nil {
		return q, err
	}
	if q.Cursor != "" {
		if _, _, err := quota.ParseViolationCursor(q.Cursor); err != nil {
			return q, badCursor()
		}
	}
	return q, nil
}

func badCursor() error { return badRequest("cursor: not a cursor this endpoint returned") }

// getViolations answers GET /api/admin/quotas/violations: the history,
// newest first, a page at a time.
func (s *Server) getViolations(w http.ResponseWriter, r *http.Request) error {
	p, err := newParams(r.URL.Query(), "subject", "since", "until", "limit", "cursor")
	if err != nil {
		return err
	}
	q, err := parseViolationQuery(p)
	if err != nil {
		return err
	}
	if err := s.needStore(); err != nil {
		return err
	}
	ctx, cancel := storeContext(r.Context(), storeTime)
	defer cancel()
	vs, next, err := s.store.Violations(ctx, q)
	switch {
	case errors.Is(err, quota.ErrBadCursor):
		return badCursor()
	case err != nil:
		return storeError(ctx, "reading violations", err)
	}
	list := violationList{Violations: make([]violationView, len(vs)), NextCursor: next}
	for i, v := range vs {
		list.Violations[i] = violationView{ID: v.ID, At: v.At.UTC(), Subject: v.Subject, KeyID: v.KeyID, User: v.User,
			Plan: v.Plan, Route: v.Route, Method: v.Method, Path: v.Path, Limit: quota.RefOf(v.LimitName, v.Limit, v.Window, v.Period),
			Kind: v.Kind.String(), Shadow: v.Shadow}
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}
