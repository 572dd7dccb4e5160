package common

// cairnUpdateBatch bounds how many documents modified by one update statement are written in one
// SQLite transaction (see .ci/install-ferretdb): one commit per document made a bulk update cost
// a WAL sync per document; a bound keeps the batch's memory small for a statement matching many.
const cairnUpdateBatch = 1000
