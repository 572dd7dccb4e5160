package sqlite

import (
	"bytes"
	"regexp"

	"github.com/FerretDB/FerretDB/internal/backends/sqlite/metadata"
	"github.com/FerretDB/FerretDB/internal/handler/sjson"
	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/must"
)

// cairnFieldName is a top-level field sjson.Marshal writes as it is (no escaping).
var cairnFieldName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

const (
	cairnMaxOr     = 16 // branches of a `$or` looked at
	cairnMaxValues = 16 // values of one field's `$in` looked at
	cairnMaxDepth  = 4  // nesting of `$and` / `$or` looked into
)

// cairnRawFilter is what a filter implies about top-level string fields, as a test of a row's
// stored text before it is decoded: `field: <string>`, `field: {$eq: <string>}` and `field: {$in:
// [<string>...]}`, at the top level, in a top-level `$and`, and in a `$or` whose every branch has
// one (`state: "queued"` or `state: "active"`). sjson.Marshal writes a top-level field as
// `"field":<value>` in the outermost object, the value as MarshalSingleValue writes it; one pass
// over the text (cairnTopLevel) finds where the fields' values start, and a row passes when such
// a value is one of the strings or an array (MongoDB matches an array holding the value), or when
// the text is not what the pass expects. The handler applies the whole filter to the rows let
// through. nil: no such condition. Without it a claim's scan of a queue decoded every request
// the collection ever held, done ones included (28% of the database's CPU while transferring
// small files). SQLite's JSON and `instr` functions, tried first, cost more per row than the
// decoding they spared, and a plain byte search also matched the field in nested documents (a
// request's history).
func cairnRawFilter(filter *types.Document) func([]byte) bool {
	var keys []string
	tests := cairnAllOf(filter, 0, &keys)
	if len(tests) == 0 {
		return nil
	}
	return func(row []byte) bool {
		values, ok := cairnTopLevel(row, keys)
		return !ok || cairnAll(tests, values)
	}
}

// cairnTest judges a row by the values of its top-level fields (as cairnTopLevel finds them).
type cairnTest func(values [][]byte) bool

// cairnAll reports whether every test holds.
func cairnAll(tests []cairnTest, values [][]byte) bool {
	for _, test := range tests {
		if !test(values) {
			return false
		}
	}
	return true
}

// cairnAllOf is the tests a filter document implies (all must hold); `keys` collects the fields
// they read, a test reading values[i] for keys[i].
func cairnAllOf(filter *types.Document, depth int, keys *[]string) []cairnTest {
	if filter == nil || depth > cairnMaxDepth {
		return nil
	}
	var tests []cairnTest
	for _, key := range filter.Keys() {
		value := must.NotFail(filter.Get(key))
		switch {
		case key == "$and":
			parts, _ := value.(*types.Array)
			for i := 0; parts != nil && i < parts.Len(); i++ {
				if part, ok := must.NotFail(parts.Get(i)).(*types.Document); ok {
					tests = append(tests, cairnAllOf(part, depth+1, keys)...)
				}
			}
		case key == "$or":
			if test := cairnAnyOf(value, depth, keys); test != nil {
				tests = append(tests, test)
			}
		case key != "_id" && cairnFieldName.MatchString(key):
			if test := cairnFieldTest(key, value, keys); test != nil {
				tests = append(tests, test)
			}
		}
	}
	return tests
}

// cairnAnyOf is the test of a `$or` whose every branch implies one; nil otherwise.
func cairnAnyOf(value any, depth int, keys *[]string) cairnTest {
	branches, ok := value.(*types.Array)
	if !ok || branches.Len() == 0 || branches.Len() > cairnMaxOr {
		return nil
	}
	var alternatives [][]cairnTest
	for i := 0; i < branches.Len(); i++ {
		branch, ok := must.NotFail(branches.Get(i)).(*types.Document)
		if !ok {
			return nil
		}
		tests := cairnAllOf(branch, depth+1, keys)
		if len(tests) == 0 {
			return nil
		}
		alternatives = append(alternatives, tests)
	}
	return func(values [][]byte) bool {
		for _, tests := range alternatives {
			if cairnAll(tests, values) {
				return true
			}
		}
		return false
	}
}

// cairnFieldTest is the test of one top-level field's equality to strings, or nil.
func cairnFieldTest(key string, value any, keys *[]string) cairnTest {
	var values []any
	switch v := value.(type) {
	case string:
		values = []any{v}
	case *types.Document:
		for _, op := range v.Keys() {
			operand := must.NotFail(v.Get(op))
			if s, ok := operand.(string); ok && op == "$eq" && values == nil {
				values = []any{s}
			}
			if in, ok := cairnStrings(operand, cairnMaxValues); ok && op == "$in" && values == nil {
				values = in
			}
		}
	}
	if len(values) == 0 || len(values) > cairnMaxValues {
		return nil
	}
	var texts [][]byte
	for _, v := range values {
		texts = append(texts, must.NotFail(sjson.MarshalSingleValue(v)))
	}
	index := len(*keys)
	*keys = append(*keys, key)
	return func(values [][]byte) bool {
		stored := values[index]
		if stored == nil {
			return false // no such field: it equals no string
		}
		if len(stored) == 0 || stored[0] == '[' {
			return true
		}
		for _, text := range texts {
			if bytes.HasPrefix(stored, text) {
				return true
			}
		}
		return false
	}
}

// cairnTopLevel finds, in one pass over a stored document's text, where the values of `keys` in
// its outermost object start (nil: no such field); ok is false when the text is not a compact
// JSON object as sjson.Marshal writes it. A value starting with a JSON string is that string
// whole up to its closing quote, so a prefix test against a marshalled string is exact.
func cairnTopLevel(row []byte, keys []string) (values [][]byte, ok bool) {
	values = make([][]byte, len(keys))
	if len(row) < 2 || row[0] != '{' {
		return nil, false
	}
	depth := 0
	for i := 0; i < len(row); i++ {
		switch row[i] {
		case '"':
			end := i + 1
			for end < len(row) && row[end] != '"' {
				if row[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(row) {
				return nil, false
			}
			if depth == 1 && (row[i-1] == '{' || row[i-1] == ',') && end+1 < len(row) && row[end+1] == ':' {
				name := row[i+1 : end]
				for k, key := range keys {
					if string(name) == key && values[k] == nil {
						values[k] = row[end+2:]
					}
				}
			}
			i = end
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		case ' ', '\t', '\n', '\r':
			return nil, false // not sjson.Marshal's compact text: a key could hide behind the space
		}
	}
	return values, depth == 0
}

// cairnStrings is the values of a `$in` array made only of strings, 1 to max of them.
func cairnStrings(in any, max int) ([]any, bool) {
	arr, ok := in.(*types.Array)
	if !ok || arr.Len() == 0 || arr.Len() > max {
		return nil, false
	}
	values := make([]any, 0, arr.Len())
	for i := 0; i < arr.Len(); i++ {
		s, ok := must.NotFail(arr.Get(i)).(string)
		if !ok {
			return nil, false
		}
		values = append(values, s)
	}
	return values, true
}

// cairnFiltered sets a query iterator's raw filter (cairnRawFilter of the query's filter) when
// SQL reads the whole table (`where` is empty): rows found by `_id` mostly match, and testing
// them first would only add to their cost.
func cairnFiltered(iter types.DocumentsIterator, filter *types.Document, where string) types.DocumentsIterator {
	if q, ok := iter.(*queryIterator); ok && !q.onlyRecordIDs && where == "" {
		q.cairnKeep = cairnRawFilter(filter)
	}
	return iter
}

// cairnNextRow advances to the next row that the raw filter keeps (any row, without one).
func (iter *queryIterator) cairnNextRow() bool {
	for iter.rows.Next() {
		if iter.cairnKeep == nil {
			return true
		}
		columns, err := iter.rows.Columns()
		if err != nil {
			return true // Next's own Columns reports it
		}
		var raw []byte // (not sql.RawBytes: Next scans the row again, which database/sql then refuses)
		dest := make([]any, len(columns))
		for i, column := range columns {
			if column == metadata.DefaultColumn {
				dest[i] = &raw
			} else {
				dest[i] = new(any)
			}
		}
		if err = iter.rows.Scan(dest...); err != nil || iter.cairnKeep(raw) {
			return true // (an error: Next's own Scan reports it)
		}
	}
	return false
}
