package common

import "github.com/FerretDB/FerretDB/internal/types"

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
