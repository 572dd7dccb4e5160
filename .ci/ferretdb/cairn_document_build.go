package types

// A document decoded from storage or projected from one is built field by field and mostly only
// read afterwards; its key index (the `keys` map) was a tenth of the database's CPU in a listing
// (a map made and filled per document, every key looked up twice by Set). Documents built by
// CairnMakeDocument and CairnAdd have no index until Set needs one (cairnIndex); Has and the
// duplicate check read the fields while there is none (cairnCount), with the same answers.

// CairnMakeDocument is MakeDocument for a document built by CairnAdd.
func CairnMakeDocument(capacity int) *Document {
	if capacity == 0 {
		return new(Document)
	}

	return &Document{fields: make([]field, 0, capacity)}
}

// CairnAdd appends key: value when d has no field key (and reports whether it did); d must not
// be frozen. It is Set for a new key, without the index.
func (d *Document) CairnAdd(key string, value any) bool {
	assertType(value)
	d.checkFrozen()

	if d.Has(key) {
		return false
	}
	if d.keys != nil {
		d.keys[key]++
	}
	d.fields = append(d.fields, field{key: key, value: value})

	return true
}

// cairnCount is how many fields of d have the key.
func (d *Document) cairnCount(key string) int {
	n := 0
	for _, f := range d.fields {
		if f.key == key {
			n++
		}
	}

	return n
}

// cairnIndex is the key index of d's fields, made when a document without one is changed by Set.
func (d *Document) cairnIndex() map[string]int {
	keys := make(map[string]int, max(1, len(d.fields)))
	for _, f := range d.fields {
		keys[f.key]++
	}

	return keys
}

// CairnIndexed gives v, and every document nested in it, the key index Set would have made, and
// returns v: for tests that compare documents with reflect.DeepEqual, which sees the index.
func CairnIndexed(v any) any {
	switch v := v.(type) {
	case *Document:
		if v == nil {
			return v
		}
		if v.keys == nil && len(v.fields) > 0 {
			v.keys = v.cairnIndex()
		}
		for _, f := range v.fields {
			CairnIndexed(f.value)
		}
	case *Array:
		if v == nil {
			return v
		}
		for _, e := range v.s {
			CairnIndexed(e)
		}
	}

	return v
}
