package common

import (
	"context"

	"github.com/FerretDB/FerretDB/internal/backends"
	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/lazyerrors"
)

// cairnUpdateBatch bounds how many modified documents are written in one SQLite transaction (see
// .ci/install-ferretdb): one commit per document made a bulk update cost a WAL sync per document;
// a bound keeps the batch's memory small for a statement matching many.
const cairnUpdateBatch = 1000

// CairnBatch holds the documents an update command's statements modified and has not written
// yet, so that the statements of one command share transactions (one commit, one WAL sync)
// instead of paying one each. The handler's write mutex is held for the whole command, so no
// other write comes between a document's read and its write. A statement that could match a
// held document (its filter does not name one `_id` that is not held) flushes the batch before
// its query reads, so every statement sees the ones before it, as when each wrote at once.
type CairnBatch struct {
	c      backends.Collection
	docs   []*types.Document
	ids    map[string]struct{}
	opaque bool // a held document's `_id` is neither a string nor an ObjectID
}

// NewCairnBatch returns an empty batch.
func NewCairnBatch() *CairnBatch {
	return &CairnBatch{ids: map[string]struct{}{}}
}

// cairnIDKey is a key for a string or ObjectID `_id` (the only kinds kept apart without a flush).
func cairnIDKey(v any) (string, bool) {
	switch id := v.(type) {
	case string:
		return "s" + id, true
	case types.ObjectID:
		return "o" + string(id[:]), true
	default:
		return "", false
	}
}

// MayMatch tells whether a statement with this filter could match a document the batch holds.
func (b *CairnBatch) MayMatch(filter *types.Document) bool {
	if len(b.docs) == 0 {
		return false
	}

	if b.opaque || filter == nil {
		return true
	}

	v, err := filter.Get("_id")
	if err != nil {
		return true
	}

	key, ok := cairnIDKey(v)
	if !ok {
		return true
	}

	_, held := b.ids[key]

	return held
}

// Add holds a modified document of collection c, flushing when the batch is full. A batch serves
// one command, whose statements all name one collection (each gets its own handle to it).
func (b *CairnBatch) Add(ctx context.Context, c backends.Collection, doc *types.Document) error {
	b.c = c
	b.docs = append(b.docs, doc)

	id, _ := doc.Get("_id")
	if key, ok := cairnIDKey(id); ok {
		b.ids[key] = struct{}{}
	} else {
		b.opaque = true
	}

	if len(b.docs) >= cairnUpdateBatch {
		return b.Flush(ctx)
	}

	return nil
}

// Flush writes the held documents in one transaction. If that fails (a unique index refusing one
// of them), they are written one by one in the order they were modified, up to the first that
// fails, whose error is returned: what writing each at once would have left.
func (b *CairnBatch) Flush(ctx context.Context) error {
	docs, c := b.docs, b.c
	b.docs, b.ids, b.opaque = nil, map[string]struct{}{}, false

	if len(docs) == 0 {
		return nil
	}

	if _, err := c.UpdateAll(ctx, &backends.UpdateAllParams{Docs: docs}); err == nil || len(docs) == 1 {
		return err
	}

	for _, doc := range docs {
		if _, err := c.UpdateAll(ctx, &backends.UpdateAllParams{Docs: []*types.Document{doc}}); err != nil {
			return lazyerrors.Error(err)
		}
	}

	return nil
}

// UpdateDocument applies one update to the documents iter yields (as FerretDB's did), writing
// them in transactions of up to cairnUpdateBatch before it returns.
func UpdateDocument(ctx context.Context, c backends.Collection, cmd string, iter types.DocumentsIterator, param *Update) (*UpdateResult, error) { //nolint:lll // for readability
	batch := NewCairnBatch()

	result, err := CairnUpdateDocument(ctx, c, cmd, iter, param, batch)
	if ferr := batch.Flush(ctx); err == nil && ferr != nil {
		return nil, lazyerrors.Error(ferr)
	}

	return result, err
}
