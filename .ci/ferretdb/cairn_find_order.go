package handler

import (
	"github.com/FerretDB/FerretDB/internal/backends"
	"github.com/FerretDB/FerretDB/internal/handler/common"
	"github.com/FerretDB/FerretDB/internal/types"
)

// cairnIDOrder is the comment of cairn_id_pushdown.go (CairnIDOrder in the sqlite backend).
const cairnIDOrder = "cairn:id-order"

// cairnPushIDSort hands a sort of exactly `{_id: ±1}` to the backend, which reads the `_id` index
// in that order, and clears it from the handler's params so that no in-memory sort collects the
// whole result: the limit then stops reading after its documents (a keyset page costs its own
// size, not the collection's). Only for a find whose comment is cairnIDOrder.
func cairnPushIDSort(params *common.FindParams, qp *backends.QueryParams) {
	if params.Comment != cairnIDOrder || params.Sort.Len() != 1 || params.Sort.Keys()[0] != "_id" {
		return
	}
	qp.Sort = params.Sort
	params.Sort = types.MakeDocument(0)
}
