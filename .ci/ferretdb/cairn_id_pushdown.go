package sqlite

import (
	"fmt"
	"strings"

	"github.com/FerretDB/FerretDB/internal/backends/sqlite/metadata"
	"github.com/FerretDB/FerretDB/internal/handler/sjson"
	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/must"
)

// cairnMaxIn bounds the values of an `_id: {$in: [...]}` pushed down to SQLite.
const cairnMaxIn = 10000

// CairnIDOrder is the query comment by which a caller declares that the `_id` values it pages
// through are strings of characters above '"' other than '\' and those JSON escapes (as LFNs,
// SE names and Cairn's other natural keys are). For such strings the JSON text SQLite indexes
// sorts exactly like the strings, so `_id` ranges and `_id` order may be taken from the index.
const CairnIDOrder = "cairn:id-order"

// cairnIDWhere narrows a query to the `_id` values its filter names: `_id: <string|ObjectID>`,
// `_id: {$in: [<string|ObjectID>...]}` and, with the CairnIDOrder comment, `_id: {$gt|$gte|$lt|$lte:
// <string>}`; with the CairnIndexOrder comment, to its fields' string equalities and bounds, or
// the filter's one `$in` of strings (see there);
// at the top level or in the elements of a top-level `$and`. Only conditions the
// filter implies are pushed (a subset of a conjunction), and the handler applies the whole
// filter to what comes back, so anything else is simply not narrowed.
func cairnIDWhere(filter *types.Document, comment string) (string, []any) {
	if filter == nil {
		return "", nil
	}
	ranges := comment == CairnIDOrder
	fields := comment == CairnIndexOrder
	var clauses []string
	var args []any
	add := func(doc *types.Document) {
		if fields {
			c, a := cairnFieldEqualities(doc)
			clauses = append(clauses, c...)
			args = append(args, a...)
		}
		v, err := doc.Get("_id")
		if err != nil {
			return
		}
		c, a := cairnIDCondition(v, ranges)
		clauses = append(clauses, c...)
		args = append(args, a...)
	}
	add(filter)
	if fields {
		c, a := cairnOnlyIn(filter)
		clauses, args = append(clauses, c...), append(args, a...)
	}
	if and, err := filter.Get("$and"); err == nil {
		if parts, ok := and.(*types.Array); ok {
			for i := 0; i < parts.Len(); i++ {
				if part, ok := must.NotFail(parts.Get(i)).(*types.Document); ok {
					add(part)
				}
			}
		}
	}
	if len(clauses) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(clauses, " AND "), args
}

var cairnRangeOps = map[string]string{"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}

// cairnIDCondition is the SQL of one `_id` condition: equality, `$in`, and (when ranges) string bounds.
func cairnIDCondition(v any, ranges bool) ([]string, []any) {
	switch v := v.(type) {
	case string, types.ObjectID:
		return []string{fmt.Sprintf(`%s = ?`, metadata.IDColumn)}, []any{cairnIDArg(v)}
	case *types.Document:
		var clauses []string
		var args []any
		for _, op := range v.Keys() {
			operand := must.NotFail(v.Get(op))
			if op == "$in" {
				if c, a := cairnIDIn(operand); c != "" {
					clauses, args = append(clauses, c), append(args, a...)
				}
				continue
			}
			if sqlOp, ok := cairnRangeOps[op]; ok && ranges {
				if s, ok := operand.(string); ok {
					clauses = append(clauses, fmt.Sprintf(`%s %s ?`, metadata.IDColumn, sqlOp))
					args = append(args, cairnIDArg(s))
				}
			}
		}
		return clauses, args
	}
	return nil, nil
}

func cairnIDIn(in any) (string, []any) {
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
	return cairnIn(metadata.IDColumn, len(args)), args
}

// cairnIn is `column IN (?, ...)` with n placeholders.
func cairnIn(column string, n int) string {
	return fmt.Sprintf(`%s IN (%s)`, column, strings.TrimSuffix(strings.Repeat("?, ", n), ", "))
}

// cairnOrderBy is `ORDER BY` a sort the handler passed down (of `_id` alone with the CairnIDOrder
// comment, of top-level fields with CairnIndexOrder), on the expressions the indexes use; "" for
// `$natural`, FerretDB's own.
func cairnOrderBy(sort *types.Document) string {
	if sort.Len() == 0 || sort.Keys()[0] == "$natural" {
		return ""
	}
	terms := make([]string, 0, sort.Len())
	for _, key := range sort.Keys() {
		term := cairnFieldColumn(key)
		if v, _ := sort.Get(key); v == int64(-1) {
			term += " DESC"
		}
		terms = append(terms, term)
	}
	return " ORDER BY " + strings.Join(terms, ", ")
}

func cairnIDArg(v any) string {
	b, err := sjson.MarshalSingleValue(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
