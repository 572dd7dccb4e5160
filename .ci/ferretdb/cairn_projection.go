package common

import (
	"strings"

	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/must"
)

// cairnUnprojected reports whether a find's empty projection would return `doc` unchanged:
// ProjectDocument then answers a deep copy (made twice) with `_id` moved to the front, so a
// document that already starts with `_id` can be returned as it is (the backend decoded it for
// this query alone, and nothing else holds it). That copy was 5% of the database's CPU when
// resolving LFNs.
func cairnUnprojected(doc, projection *types.Document) bool {
	if projection.Len() != 0 || doc.Len() == 0 {
		return false
	}
	keys := doc.Keys()
	return keys[0] == "_id"
}

// cairnTopLevel is a validated projection of top-level fields only, all included (`{a: 1,
// b: true}`) or all excluded (`{meta: 0}`), `_id` kept or dropped: no dotted path, no positional
// `$`, no literal value, no operator.
type cairnTopLevel struct {
	fields  map[string]struct{}
	exclude bool
	keepID  bool
}

// cairnTopLevelOf returns the fast form of a validated projection, or nil when ProjectDocument
// must apply it.
func cairnTopLevelOf(projection *types.Document, inclusion bool) *cairnTopLevel {
	if projection.Len() == 0 {
		return nil
	}
	p := &cairnTopLevel{fields: make(map[string]struct{}, projection.Len()), exclude: !inclusion, keepID: true}
	for _, key := range projection.Keys() {
		include, isBool := must.NotFail(projection.Get(key)).(bool)
		if !isBool || strings.ContainsAny(key, ".$") {
			return nil
		}
		if key == "_id" {
			p.keepID = include
			continue
		}
		if include != inclusion {
			return nil
		}
		p.fields[key] = struct{}{}
	}
	return p
}

// project answers what ProjectDocument answers for such a projection, without its three deep
// copies of the document and one of the projection per document (the cost of a projection was
// 0.3 database CPU-s per 10k catalogue files read by `_id`, 60% more than the read without it;
// an exclusion was 19% of the database's CPU in listings): `_id` first, then the document's
// other fields in its order, those listed (inclusion) or those not listed (exclusion), their
// values shared with `doc`, which the backend decoded for this query alone.
func (p *cairnTopLevel) project(doc *types.Document) (*types.Document, bool) {
	if p == nil || !doc.Has("_id") {
		return nil, false
	}
	projected := types.CairnMakeDocument(doc.Len())
	projected.SetRecordID(doc.RecordID())
	if p.keepID {
		projected.CairnAdd("_id", must.NotFail(doc.Get("_id")))
	}
	keys, values := doc.Keys(), doc.Values()
	for i, key := range keys {
		if _, listed := p.fields[key]; listed != p.exclude && key != "_id" && !projected.CairnAdd(key, values[i]) {
			return nil, false // a key twice: ProjectDocument decides
		}
	}
	return projected, true
}
