package quota

import (
	"encoding/json"
	"time"
)

// AuditEntry is one change made through the admin API, as
// quota/pgstore and quota/boltstore keep them.
type AuditEntry struct {
	ID      int64           `json:"id"`
	At      time.Time       `json:"at"`
	Actor   string          `json:"actor"`
	Action  string          `json:"action"`            // "rule.put", "quota.reset", ...
	Subject string          `json:"subject,omitempty"` // what it was done to
	Detail  json.RawMessage `json:"detail"`            // a JSON object; {} when none
}

// MaxAuditLog is the most entries a store's AuditLog returns at once.
const MaxAuditLog = 1000

// AuditDetail returns the JSON of an audit entry's detail: anything
// encoding/json can marshal, nil meaning none ({}).
func AuditDetail(detail any) (json.RawMessage, error) {
	if detail == nil {
		return json.RawMessage("{}"), nil
	}
	return json.Marshal(detail)
}
