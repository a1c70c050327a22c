package boltstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/gaia-proxy/gaia-proxy/limiter"
	"github.com/gaia-proxy/gaia-proxy/quota"
)

// rulesBucket holds runtime rules, one per subject: key = subject; value
// = the storedRule in JSON. There are few rules, so DeleteRule finds an
// id by scanning.
const rulesBucket = "rate_limit_configs"

// storedRule is a rulesBucket value. Rate and Quota are the lists as
// quota.EncodeRule writes them; absent means nil (inherit).
type storedRule struct {
	ID        string          `json:"id"`
	Subject   string          `json:"subject"`
	Rate      json.RawMessage `json:"rate,omitempty"`
	Quota     json.RawMessage `json:"quota,omitempty"`
	ExpiresAt time.Time       `json:"expires_at,omitzero"`
}

// Rules returns every runtime rule, ordered by subject, expired ones
// included (a Policy ignores those). Quota periods are calendars in loc;
// nil means UTC.
func (s *Store) Rules(ctx context.Context, loc *time.Location) ([]limiter.Rule, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("boltstore: read rules: %w", err)
	}
	var rules []limiter.Rule
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte(rulesBucket)).ForEach(func(k, v []byte) error {
			var sr storedRule
			if err := json.Unmarshal(v, &sr); err != nil {
				return fmt.Errorf("rule %q: %w", k, err)
			}
			r := limiter.Rule{ID: sr.ID, Subject: sr.Subject, ExpiresAt: sr.ExpiresAt}
			var err error
			if r.Limits.Rate, err = quota.DecodeLimits("rate", sr.Rate, loc); err != nil {
				return fmt.Errorf("rule %s (%s): %w", r.ID, r.Subject, err)
			}
			if r.Limits.Quota, err = quota.DecodeLimits("quota", sr.Quota, loc); err != nil {
				return fmt.Errorf("rule %s (%s): %w", r.ID, r.Subject, err)
			}
			rules = append(rules, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: read rules: %w", err)
	}
	return rules, nil
}

// PutRule creates the rule of r.Subject, or replaces its limits and
// expiry if it exists, and returns the rule as stored, with its id (new
// ones get quota.NewRuleID; r.ID is not used). Invalid rules are refused
// with an error wrapping quota.ErrInvalid. WatchRules hears of the
// change.
func (s *Store) PutRule(ctx context.Context, r limiter.Rule) (limiter.Rule, error) {
	rate, quotas, err := quota.EncodeRule(r)
	if err != nil {
		return limiter.Rule{}, fmt.Errorf("boltstore: put rule %q: %w", r.Subject, err)
	}
	if err := ctx.Err(); err != nil {
		return limiter.Rule{}, fmt.Errorf("boltstore: put rule %q: %w", r.Subject, err)
	}
	if !r.ExpiresAt.IsZero() {
		r.ExpiresAt = r.ExpiresAt.Truncate(time.Microsecond).UTC() // as PostgreSQL keeps it
	}
	err = s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(rulesBucket))
		r.ID = quota.NewRuleID()
		if old := b.Get([]byte(r.Subject)); old != nil {
			var sr storedRule
			if err := json.Unmarshal(old, &sr); err != nil {
				return fmt.Errorf("rule %q: %w", r.Subject, err)
			}
			r.ID = sr.ID
		}
		v, err := json.Marshal(storedRule{ID: r.ID, Subject: r.Subject, Rate: rate, Quota: quotas, ExpiresAt: r.ExpiresAt})
		if err != nil {
			return err
		}
		return b.Put([]byte(r.Subject), v)
	})
	if err != nil {
		return limiter.Rule{}, fmt.Errorf("boltstore: put rule %q: %w", r.Subject, err)
	}
	s.rulesChanged()
	return r, nil
}

// DeleteRule removes the rule with id and reports whether there was one.
func (s *Store) DeleteRule(ctx context.Context, id string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("boltstore: delete rule %q: %w", id, err)
	}
	deleted := false
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(rulesBucket))
		var subject []byte
		err := b.ForEach(func(k, v []byte) error {
			var sr storedRule
			if err := json.Unmarshal(v, &sr); err != nil {
				return fmt.Errorf("rule %q: %w", k, err)
			}
			if sr.ID == id {
				subject = k
			}
			return nil
		})
		if err != nil || subject == nil {
			return err
		}
		deleted = true
		return b.Delete(subject)
	})
	if err != nil {
		return false, fmt.Errorf("boltstore: delete rule %q: %w", id, err)
	}
	if deleted {
		s.rulesChanged()
	}
	return deleted, nil
}

// WatchRules calls onChange once at start and after each change made
// through s, until ctx ends; then it returns nil. The data file belongs
// to one process, so no other change can happen. onChange runs on the
// changing goroutine; it should be quick (signal a channel, not reload
// inline).
func (s *Store) WatchRules(ctx context.Context, onChange func()) error {
	s.mu.Lock()
	s.nextWatch++
	id := s.nextWatch
	s.watchers[id] = onChange
	s.mu.Unlock()
	onChange()
	<-ctx.Done()
	s.mu.Lock()
	delete(s.watchers, id)
	s.mu.Unlock()
	return nil
}

// rulesChanged tells every watcher that a rule changed.
func (s *Store) rulesChanged() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.watchers {
		f()
	}
}
