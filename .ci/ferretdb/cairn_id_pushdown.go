package sqlite

import (
	"fmt"
	"strings"

	"github.com/FerretDB/FerretDB/internal/backends/sqlite/metadata"
	"github.com/FerretDB/FerretDB/internal/handler/sjson"
	"github.com/FerretDB/FerretDB/internal/types"
)

// cairnMaxIn bounds the values of an `_id: {$in: [...]}` pushed down to SQLite.
const cairnMaxIn = 10000

// cairnIDWhere narrows a query to the `_id` values its filter names: `_id: <string|ObjectID>` or
// `_id: {$in: [<string|ObjectID>...]}`, whatever other keys the filter has (the handler applies
// the whole filter to what comes back). Any other filter gets no WHERE clause.
func cairnIDWhere(filter *types.Document) (string, []any) {
	if filter == nil {
		return "", nil
	}
	v, err := filter.Get("_id")
	if err != nil {
		return "", nil
	}
	switch v := v.(type) {
	case string, types.ObjectID:
		return fmt.Sprintf(` WHERE %s = ?`, metadata.IDColumn), []any{cairnIDArg(v)}
	case *types.Document:
		if v.Len() != 1 {
			return "", nil
		}
		in, err := v.Get("$in")
		if err != nil {
			return "", nil
		}
		values, ok := in.(*types.Array)
		if !ok || values.Len() == 0 || values.Len() > cairnMaxIn {
			return "", nil
		}
		args := make([]any, 0, values.Len())
		for i := 0; i < values.Len(); i++ {
			item, _ := values.Get(i)
			switch item.(type) {
			case string, types.ObjectID:
				args = append(args, cairnIDArg(item))
			default:
				return "", nil
			}
		}
		marks := strings.TrimSuffix(strings.Repeat("?, ", len(args)), ", ")
		return fmt.Sprintf(` WHERE %s IN (%s)`, metadata.IDColumn, marks), args
	}
	return "", nil
}

func cairnIDArg(v any) string {
	b, err := sjson.MarshalSingleValue(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
