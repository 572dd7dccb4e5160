package sqlite

import (
	"fmt"
	"strings"

	"github.com/FerretDB/FerretDB/internal/backends/sqlite/metadata"
	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/must"
)

// CairnIndexOrder is the query comment by which a caller declares two things of a find:
//   - no field its filter compares with a string or a boolean at the top level (or in a
//     top-level `$and`) holds an array in any document (MongoDB's `{f: "x"}` also matches an
//     array holding "x"), and the strings it bounds (`$gt`, `$lt`...) sort like their JSON text
//     (as for CairnIDOrder);
//   - each field of its sort holds, in every document the filter matches, values of one kind
//     whose JSON text sorts like the values: strings as for CairnIDOrder, non-negative integers
//     of one number of digits, dates (milliseconds since 1970: thirteen digits until 2286); and
//     no part of a dotted sort path holds an array.
//
// Then those equalities and bounds become `WHERE` terms and the sort (of fields or dotted
// paths, passed down by the handler, see cairn_find_order.go) becomes `ORDER BY` terms, spelled
// as FerretDB's indexes spell their keys, so SQLite reads an index that holds them in that order,
// and the handler's limit stops reading after its documents: taking the next 256 requests of a
// queue of 100k costs 256, not the queue. The handler still applies the whole filter to every
// document that comes back.
const CairnIndexOrder = "cairn:index-order"

// cairnFieldColumn is a field's value as FerretDB's indexes spell it (`->"a"->"b"` for `a.b`,
// which SQLite reads as `->'a'->'b'`); `_id` as the `_id` index does. Field names come from the
// handler, which passes only names of letters, digits and underscores (each part of a dotted
// path); quotes are doubled regardless.
func cairnFieldColumn(field string) string {
	if field == "_id" {
		return metadata.IDColumn
	}
	column := metadata.DefaultColumn
	for _, part := range strings.Split(field, ".") {
		column += fmt.Sprintf("->'%s'", strings.ReplaceAll(part, "'", "''"))
	}
	return column
}

// cairnFieldEqualities is the SQL of doc's top-level `f: <string>` and `f: <boolean>` conditions
// (f not `_id`, whose conditions cairnIDCondition makes): JSON text equal to the value's; and of
// its string bounds (cairnStringRange).
func cairnFieldEqualities(doc *types.Document) ([]string, []any) {
	var clauses []string
	var args []any
	for _, key := range doc.Keys() {
		if key == "_id" || !cairnPlainField(key) {
			continue
		}
		switch v := must.NotFail(doc.Get(key)).(type) {
		case string, bool:
			clauses = append(clauses, cairnFieldColumn(key)+" = ?")
			args = append(args, cairnIDArg(v))
		case *types.Document:
			c, a := cairnStringRange(cairnFieldColumn(key), v)
			clauses, args = append(clauses, c...), append(args, a...)
		}
	}
	return clauses, args
}

// cairnStringRange is the SQL of a field's `$gt`, `$gte`, `$lt` and `$lte` of strings. MongoDB
// compares a string only with strings, and the JSON text of every string (and of no other
// value) starts with '"', so the strings' texts lie in ['"', '#'): each bound comes with the
// other end of that range, and SQLite reads only the strings' part of an index.
func cairnStringRange(column string, ops *types.Document) ([]string, []any) {
	var clauses []string
	var args []any
	for _, op := range ops.Keys() {
		sqlOp, ok := cairnRangeOps[op]
		s, isString := must.NotFail(ops.Get(op)).(string)
		if !ok || !isString {
			continue
		}
		bracket := column + ` < '#'`
		if sqlOp == "<" || sqlOp == "<=" {
			bracket = column + ` >= '"'`
		}
		clauses = append(clauses, fmt.Sprintf("%s %s ?", column, sqlOp), bracket)
		args = append(args, cairnIDArg(s))
	}
	return clauses, args
}

// cairnPlainField: a name of ASCII letters, digits and underscores, not starting with a digit.
func cairnPlainField(name string) bool {
	if name == "" || (name[0] >= '0' && name[0] <= '9') {
		return false
	}
	for _, r := range name {
		if !(r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')) {
			return false
		}
	}
	return true
}
