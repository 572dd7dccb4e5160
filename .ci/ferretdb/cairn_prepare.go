package fsql

import (
	"context"
	"database/sql"
)

// CairnPrepareContext prepares query once for many executions in this transaction (see the
// sqlite backend's UpdateAll): executing the text each time parsed and planned it again for every
// document written, a sixth of the database's CPU in a bulk update.
func (tx *Tx) CairnPrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return tx.sqlTx.PrepareContext(ctx, query)
}
