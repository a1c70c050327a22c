// Package migrations holds gaia-proxy's PostgreSQL schema as ordered SQL
// files embedded in the binary, and applies them.
package migrations

import "embed"

// FS holds the migrations, applied in file-name order: NNNN_name.sql.
//
//go:embed *.sql
var FS embed.FS
