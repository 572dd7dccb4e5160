package backends

// CairnGroup is a count of documents per combination of top-level fields' values that a
// backend may answer itself (the handler's cairn_group_count.go makes it from an aggregate):
// each result is `{_id: {Keys[i]: <value of Fields[i]>, ...}, Out: <count>}`. A backend that
// answers it sets QueryResult.CairnGrouped; else it returns the documents as for any query and
// the handler groups them.
type CairnGroup struct {
	Fields []string // top-level field names of letters, digits and underscores
	Keys   []string // the names of their values in the result's _id, one per field
	Out    string   // the name of the count
}
