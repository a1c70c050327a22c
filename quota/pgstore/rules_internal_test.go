package pgstore

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestRulesHandlerSchema: NOTIFY is database-wide, so a watcher ignores
// changes made in other schemas.
func TestRulesHandlerSchema(t *testing.T) {
	calls := 0
	h := &rulesHandler{onChange: func() { calls++ }, schema: "mine"}
	for _, payload := range []string{"other", "", "mine"} {
		h.HandleNotification(context.Background(), &pgconn.Notification{Channel: RulesChannel, Payload: payload}, nil)
	}
	if calls != 1 {
		t.Errorf("got %d calls, want 1 (for payload %q only)", calls, "mine")
	}
}
