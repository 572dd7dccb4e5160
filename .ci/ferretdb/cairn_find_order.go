package handler

import (
	"strings"

	"github.com/FerretDB/FerretDB/internal/backends"
	"github.com/FerretDB/FerretDB/internal/handler/common"
	"github.com/FerretDB/FerretDB/internal/types"
)

// The comments of cairn_id_pushdown.go and cairn_index_order.go (CairnIDOrder and
// CairnIndexOrder in the sqlite backend).
const (
	cairnIDOrder    = "cairn:id-order"
	cairnIndexOrder = "cairn:index-order"
)

// cairnNameChars are those of the field names whose sort cairnIndexOrder passes down.
const cairnNameChars = "_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// cairnPushIDSort hands a find's sort to the backend, which reads an index in that order, and
// clears it from the handler's params so that no in-memory sort collects the whole result: the
// limit then stops reading after its documents (a keyset page or a claim costs its own size, not
// the collection's). With the cairnIDOrder comment, a sort of exactly `{_id: ±1}`; with
// cairnIndexOrder, a sort of fields whose names (each part of a dotted path) are letters, digits
// and underscores, not starting with a digit.
func cairnPushIDSort(params *common.FindParams, qp *backends.QueryParams) {
	switch params.Comment {
	case cairnIDOrder:
		if params.Sort.Len() != 1 || params.Sort.Keys()[0] != "_id" {
			return
		}
	case cairnIndexOrder:
		if params.Sort.Len() == 0 {
			return
		}
		for _, key := range params.Sort.Keys() {
			for _, part := range strings.Split(key, ".") {
				if part == "" || strings.Trim(part, cairnNameChars) != "" || (part[0] >= '0' && part[0] <= '9') {
					return
				}
			}
		}
	default:
		return
	}
	qp.Sort = params.Sort
	params.Sort = types.MakeDocument(0)
}
