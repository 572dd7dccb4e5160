package handler

import (
	"github.com/FerretDB/wire"
	"github.com/FerretDB/wire/wirebson"

	"github.com/FerretDB/FerretDB/internal/types"
)

// cairnFindReply is documentOpMsg for the batch of a find or of a find's cursor: documents read
// from storage, which cannot hold NaN, so the wire package's NaN check of the encoded reply is
// skipped (wire.CairnNewStoredOpMsg); and the reply is encoded in one pass
// (types.Document.CairnAppendBSON, the bytes bson.FromDocument and Encode make). Requests are
// still checked.
func cairnFindReply(doc *types.Document) (*wire.OpMsg, error) {
	return wire.CairnNewStoredOpMsg(wirebson.RawDocument(doc.CairnAppendBSON(nil)))
}

// cairnBatchReply is cairnFindReply for a find's cursor and documentOpMsg for any other.
func cairnBatchReply(data any) func(*types.Document) (*wire.OpMsg, error) {
	if _, fromFind := data.(*findCursorData); fromFind {
		return cairnFindReply
	}
	return documentOpMsg
}
