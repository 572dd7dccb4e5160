package sqlite

import (
	"fmt"
	"strings"
	"time"

	"github.com/FerretDB/FerretDB/internal/backends/sqlite/metadata"
	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/must"
)

// CairnIndexOrder is the query comment by which a caller declares two things of a find:
//   - no field its filter compares with a string or a boolean at the top level (or in a
//     top-level `$and`), or whose `$in` of strings is the whole filter, holds an array in any
//     document (MongoDB's `{f: "x"}` also matches an array holding "x"), the strings it bounds
//     (`$gt`, `$lt`...) sort like their JSON text (as for CairnIDOrder), and a field it bounds by
//     a date holds dates (or null) only;
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

// cairnOnlyIn is the SQL of a filter that is one top-level field's `$in` of 1 to cairnMaxIn
// strings and nothing else (`{f: {$in: [...]}}`, what kernel.db.find_by_values asks): JSON text
// among the values' texts, which SQLite reads from the field's index one value at a time. Only
// that shape: an `$in` beside other conditions or a sort could turn SQLite's plan away from the
// index that serves them (a claim's `kind: {$in: ...}` with its queue order).
func cairnOnlyIn(filter *types.Document) ([]string, []any) {
	if filter.Len() != 1 {
		return nil, nil
	}
	key := filter.Keys()[0]
	ops, ok := must.NotFail(filter.Get(key)).(*types.Document)
	if key == "_id" || !cairnPlainField(key) || !ok || ops.Len() != 1 || ops.Keys()[0] != "$in" {
		return nil, nil
	}
	values, ok := cairnStrings(must.NotFail(ops.Get("$in")), cairnMaxIn)
	if !ok {
		return nil, nil
	}
	args := make([]any, 0, len(values))
	for _, s := range values {
		args = append(args, cairnIDArg(s))
	}
	return []string{cairnIn(cairnFieldColumn(key), len(args))}, args
}

// cairnStringRange is the SQL of a field's `$gt`, `$gte`, `$lt` and `$lte` of strings or dates.
// MongoDB compares a string only with strings and a date only with dates; the JSON text of every
// string (and of no other value) starts with '"', so the strings' texts lie in ['"', '#'), and a
// date's text is its milliseconds, digits only, in ['0', ':') (where the promise puts the field's
// other values too: dates, thirteen digits). Each bound comes with the other end of its range,
// and SQLite reads only that part of an index.
func cairnStringRange(column string, ops *types.Document) ([]string, []any) {
	var clauses []string
	var args []any
	for _, op := range ops.Keys() {
		sqlOp, ok := cairnRangeOps[op]
		if !ok {
			continue
		}
		low, high := `'"'`, `'#'`
		switch must.NotFail(ops.Get(op)).(type) {
		case string:
		case time.Time:
			low, high = `'0'`, `':'`
		default:
			continue
		}
		bracket := column + " < " + high
		if sqlOp == "<" || sqlOp == "<=" {
			bracket = column + " >= " + low
		}
		clauses = append(clauses, fmt.Sprintf("%s %s ?", column, sqlOp), bracket)
		args = append(args, cairnIDArg(must.NotFail(ops.Get(op))))
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
