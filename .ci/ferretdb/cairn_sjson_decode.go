package sjson

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/FerretDB/FerretDB/internal/types"
)

// Unmarshal decodes the top-level document: in one pass over the stored text when
// cairnUnmarshal understands all of it, else by FerretDB's own decoder (sjsonUnmarshal), which
// also gives every error. sjsonUnmarshal decodes each nested value again from its raw bytes with
// a new json.Decoder per value (a document with an array of objects is scanned four times and
// every scalar through reflection); resolving 10k LFNs spent 62% of the database's CPU there.
func Unmarshal(data []byte) (*types.Document, error) {
	if d, ok := cairnUnmarshal(data); ok {
		return d, nil
	}

	return sjsonUnmarshal(data)
}

// cairnUnmarshal is sjsonUnmarshal for the text FerretDB writes; ok is false for anything it does
// not decode to exactly the same document (escaped keys, duplicate or reordered keys, values it
// does not know how to read), and the caller then runs sjsonUnmarshal on the whole text.
// Scalars other than plain strings, int, long, date, bool, double and objectId are decoded by
// unmarshalSingleValue, as before.
func cairnUnmarshal(data []byte) (*types.Document, bool) {
	s := cairnScanner{b: data}
	pairs, ok := s.object(32)
	if !ok || s.rest() {
		return nil, false
	}

	schemaAt := -1
	for i, p := range pairs {
		if cairnKeyIs(data, p, "$s") {
			if schemaAt >= 0 {
				return nil, false
			}
			schemaAt = i
		}
	}
	if schemaAt < 0 {
		return nil, false
	}

	sch, ok := cairnSchema(data[pairs[schemaAt].start:pairs[schemaAt].end])
	if !ok {
		return nil, false
	}

	fields := pairs[1:]
	if schemaAt != 0 {
		fields = append(pairs[:schemaAt], pairs[schemaAt+1:]...)
	}

	return cairnDocument(data, fields, sch)
}

// cairnDocument builds the document of `fields` (keys in the schema's order, each once).
func cairnDocument(data []byte, fields []cairnPair, sch *schema) (*types.Document, bool) {
	if len(fields) != len(sch.Keys) {
		return nil, false
	}

	d := types.CairnMakeDocument(len(fields))
	for i, key := range sch.Keys {
		if !cairnKeyIs(data, fields[i], key) {
			return nil, false
		}
		v, ok := cairnValue(data[fields[i].start:fields[i].end], sch.Properties[key])
		if !ok {
			return nil, false
		}
		if !d.CairnAdd(key, v) {
			return nil, false
		}
	}

	return d, true
}

// cairnValue decodes one value by its schema element, as unmarshalSingleValue does.
func cairnValue(raw []byte, sch *elem) (any, bool) {
	if bytes.Equal(raw, []byte("null")) {
		return types.Null, true
	}
	if sch == nil {
		return nil, false
	}

	switch sch.Type {
	case elemTypeObject:
		if sch.Schema == nil {
			return nil, false
		}
		s := cairnScanner{b: raw}
		pairs, ok := s.object(len(sch.Schema.Keys))
		if !ok || s.rest() {
			return nil, false
		}
		if len(pairs) == 0 {
			return &types.Document{}, true
		}
		return cairnDocumentValue(raw, pairs, sch.Schema)
	case elemTypeArray:
		if sch.Items == nil {
			return nil, false
		}
		s := cairnScanner{b: raw}
		items, ok := s.array()
		if !ok || s.rest() || len(items) != len(sch.Items) {
			return nil, false
		}
		a := types.MakeArray(len(items))
		for i, item := range items {
			v, ok := cairnValue(raw[item.start:item.end], sch.Items[i])
			if !ok {
				return nil, false
			}
			a.Append(v)
		}
		return a, true
	case elemTypeString:
		if s, ok := cairnPlainString(raw); ok {
			return s, true
		}
	case elemTypeObjectID:
		if s, ok := cairnPlainString(raw); ok && len(s) == 2*types.ObjectIDLen {
			var id types.ObjectID
			if _, err := hex.Decode(id[:], []byte(s)); err == nil {
				return id, true
			}
		}
	case elemTypeInt:
		if cairnInteger(raw) {
			if n, err := strconv.ParseInt(string(raw), 10, 32); err == nil {
				return int32(n), true
			}
		}
	case elemTypeLong:
		if cairnInteger(raw) {
			if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
				return n, true
			}
		}
	case elemTypeDate:
		if cairnInteger(raw) {
			if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
				return time.UnixMilli(n), true
			}
		}
	case elemTypeDouble:
		if cairnNumber(raw) {
			if f, err := strconv.ParseFloat(string(raw), 64); err == nil {
				return f, true
			}
		}
	case elemTypeBool:
		switch string(raw) {
		case "true":
			return true, true
		case "false":
			return false, true
		}
	}

	v, err := unmarshalSingleValue(raw, sch)
	if err != nil {
		return nil, false
	}

	return v, true
}

// cairnDocumentValue is a nested document as documentType.UnmarshalJSONWithSchema builds it.
func cairnDocumentValue(raw []byte, pairs []cairnPair, sch *schema) (any, bool) {
	d, ok := cairnDocument(raw, pairs, sch)
	if !ok {
		return nil, false
	}
	return d, true
}

// cairnPlainString is the JSON string `raw` when it has no escapes and is valid UTF-8 (what
// encoding/json returns unchanged); ok is false otherwise.
func cairnPlainString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	for _, c := range inner {
		if c == '\\' || c == '"' || c < 0x20 {
			return "", false
		}
	}
	if !utf8.Valid(inner) {
		return "", false
	}
	return string(inner), true
}

// cairnInteger reports whether raw is a JSON integer: -?(0|[1-9][0-9]*).
func cairnInteger(raw []byte) bool {
	if len(raw) > 0 && raw[0] == '-' {
		raw = raw[1:]
	}
	if len(raw) == 0 || (raw[0] == '0' && len(raw) > 1) {
		return false
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// cairnNumber reports whether raw is a JSON number: an integer, then .digits, then [eE][+-]digits.
func cairnNumber(raw []byte) bool {
	i := 0
	if i < len(raw) && raw[i] == '-' {
		i++
	}
	digits := func() int {
		start := i
		for i < len(raw) && raw[i] >= '0' && raw[i] <= '9' {
			i++
		}
		return i - start
	}
	if i < len(raw) && raw[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(raw) && raw[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(raw) && (raw[i] == 'e' || raw[i] == 'E') {
		i++
		if i < len(raw) && (raw[i] == '+' || raw[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(raw)
}

// Parsed schemas by their JSON text: a collection's documents mostly share a few schemas, and
// decoding one with encoding/json cost as much as the rest of the document. Only schemas whose
// objects list each key once, each with a property, are kept (cairnSchemaClean); the cache is
// emptied when it reaches cairnSchemasMax entries. The schemas are only read once parsed.
var (
	cairnSchemaMu sync.RWMutex
	cairnSchemas  = map[string]*schema{}
)

const cairnSchemasMax = 4096

// cairnSchema is the schema of `raw` as sjsonUnmarshal decodes it (unknown fields refused);
// ok is false when that fails or the schema is not clean.
func cairnSchema(raw []byte) (*schema, bool) {
	cairnSchemaMu.RLock()
	sch, found := cairnSchemas[string(raw)]
	cairnSchemaMu.RUnlock()
	if found {
		return sch, true
	}

	r := bytes.NewReader(raw)
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	sch = new(schema)
	if err := dec.Decode(sch); err != nil || checkConsumed(dec, r) != nil || !cairnSchemaClean(sch) {
		return nil, false
	}

	cairnSchemaMu.Lock()
	if len(cairnSchemas) >= cairnSchemasMax {
		clear(cairnSchemas)
	}
	cairnSchemas[string(raw)] = sch
	cairnSchemaMu.Unlock()

	return sch, true
}

// cairnSchemaClean reports whether every object of the schema lists distinct keys, each with a
// property (then keys in the schema's order, matched one to one, are the whole document).
func cairnSchemaClean(sch *schema) bool {
	seen := make(map[string]struct{}, len(sch.Keys))
	for _, key := range sch.Keys {
		if _, dup := seen[key]; dup {
			return false
		}
		seen[key] = struct{}{}
		if e, ok := sch.Properties[key]; !ok || (e != nil && !cairnElemClean(e)) {
			return false
		}
	}
	return true
}

func cairnElemClean(e *elem) bool {
	if e.Schema != nil && !cairnSchemaClean(e.Schema) {
		return false
	}
	for _, item := range e.Items {
		if item != nil && !cairnElemClean(item) {
			return false
		}
	}
	return true
}

// cairnPair is one member of a JSON object (or element of an array, with no key): the bytes
// between the quotes of its key are [keyStart, keyEnd) of the scanned text and those of its value
// [start, end); plain is false when the key has an escape or a control character.
type cairnPair struct {
	keyStart, keyEnd int
	start, end       int
	plain            bool
}

// cairnKeyIs reports whether the key of p is exactly `key` (a plain key that equals the schema's,
// which encoding/json decoded: then the key decodes to itself).
func cairnKeyIs(b []byte, p cairnPair, key string) bool {
	return p.plain && string(b[p.keyStart:p.keyEnd]) == key
}

// cairnScanner finds the members of one JSON object or array without decoding their values.
type cairnScanner struct {
	b []byte
	i int
}

func (s *cairnScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// rest reports whether anything but nothing follows (sjsonUnmarshal refuses trailing bytes).
func (s *cairnScanner) rest() bool {
	return s.i != len(s.b)
}

// object reads `{"key": value, ...}`, expecting about `size` members.
func (s *cairnScanner) object(size int) ([]cairnPair, bool) {
	s.space()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return nil, false
	}
	s.i++
	pairs := make([]cairnPair, 0, size)
	s.space()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return pairs, true
	}
	for {
		s.space()
		keyStart := s.i + 1
		plain, ok := s.scanString()
		if !ok {
			return nil, false
		}
		keyEnd := s.i - 1
		s.space()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return nil, false
		}
		s.i++
		s.space()
		vStart := s.i
		if !s.skipValue() {
			return nil, false
		}
		pairs = append(pairs, cairnPair{keyStart: keyStart, keyEnd: keyEnd, start: vStart, end: s.i, plain: plain})
		s.space()
		if s.i >= len(s.b) {
			return nil, false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return pairs, true
		default:
			return nil, false
		}
	}
}

// array reads `[value, ...]`.
func (s *cairnScanner) array() ([]cairnPair, bool) {
	s.space()
	if s.i >= len(s.b) || s.b[s.i] != '[' {
		return nil, false
	}
	s.i++
	items := make([]cairnPair, 0, 4)
	s.space()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return items, true
	}
	for {
		s.space()
		start := s.i
		if !s.skipValue() {
			return nil, false
		}
		items = append(items, cairnPair{start: start, end: s.i})
		s.space()
		if s.i >= len(s.b) {
			return nil, false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return items, true
		default:
			return nil, false
		}
	}
}

// skipString moves past a JSON string (escapes included) without checking its contents.
func (s *cairnScanner) skipString() bool {
	_, ok := s.scanString()
	return ok
}

// scanString moves past a JSON string; plain is false when it holds an escape or a control
// character.
func (s *cairnScanner) scanString() (plain, ok bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return false, false
	}
	plain = true
	for s.i++; s.i < len(s.b); s.i++ {
		switch c := s.b[s.i]; {
		case c == '\\':
			plain = false
			s.i++
		case c == '"':
			s.i++
			return plain, true
		case c < 0x20:
			plain = false
		}
	}
	return false, false
}

// skipValue moves past one value: a string, an object or array (to its matching bracket), or a
// number or literal (to the next delimiter). The value's bytes are checked when it is decoded.
func (s *cairnScanner) skipValue() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		return s.skipString()
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if !s.skipString() {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	default:
		start := s.i
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return s.i > start
			}
			s.i++
		}
		return s.i > start
	}
}
