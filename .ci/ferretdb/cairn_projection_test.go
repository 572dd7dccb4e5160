package common

import (
	"bytes"
	"math/rand"
	"testing"

	"github.com/FerretDB/FerretDB/internal/handler/sjson"
	"github.com/FerretDB/FerretDB/internal/types"
)

var cairnKeys = []string{"_id", "a", "b", "c", "replicas", "owner", "mode"}

// cairnRandomDoc is a stored-like document: `_id` somewhere (first, as stored, or not), other
// top-level keys in random order, scalars, nested documents and arrays.
func cairnRandomDoc(r *rand.Rand) *types.Document {
	doc := types.MakeDocument(0)
	for _, i := range r.Perm(len(cairnKeys)) {
		if r.Intn(4) == 0 {
			continue
		}
		var v any
		switch r.Intn(4) {
		case 0:
			v = int32(r.Intn(100))
		case 1:
			v = "s" + cairnKeys[i]
		case 2:
			v = cairnMust(types.NewDocument("x", int64(r.Intn(9)), "y", types.MakeArray(0)))
		default:
			v = cairnMust(types.NewArray(int32(1), cairnMust(types.NewDocument("se", "A"))))
		}
		doc.Set(cairnKeys[i], v)
	}
	if r.Intn(2) == 0 && doc.Has("_id") {
		id := doc.Remove("_id")
		rest := doc
		doc = cairnMust(types.NewDocument("_id", id))
		for _, k := range rest.Keys() {
			doc.Set(k, cairnMust(rest.Get(k)))
		}
	}
	doc.SetRecordID(r.Int63())
	return doc
}

// cairnRandomProjection mixes what the fast path takes (inclusions or exclusions of top-level
// fields, `_id` either way) and what it must leave to ProjectDocument (dotted paths, mixtures).
func cairnRandomProjection(r *rand.Rand) *types.Document {
	modes := [][]any{{int32(1), true, float64(1), int64(2)}, {false, int32(0), float64(0)}}
	mode := modes[r.Intn(2)]
	p := types.MakeDocument(0)
	for _, i := range r.Perm(len(cairnKeys)) {
		if r.Intn(2) == 0 {
			continue
		}
		values := mode
		if cairnKeys[i] == "_id" || r.Intn(20) == 0 {
			values = append(append([]any{}, modes[0]...), modes[1]...)
		}
		p.Set(cairnKeys[i], values[r.Intn(len(values))])
	}
	if r.Intn(8) == 0 {
		p.Set("c.x", mode[0])
	}
	return p
}

func cairnMust[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestCairnTopLevelProjection: the fast path answers exactly what ProjectDocument does, or
// declines; and it takes the projections Cairn sends.
func TestCairnTopLevelProjection(t *testing.T) {
	r := rand.New(rand.NewSource(17))
	taken, excluded := 0, 0
	for n := 0; n < 20000; n++ {
		projection, doc := cairnRandomProjection(r), cairnRandomDoc(r)
		validated, inclusion, err := ValidateProjection(projection)
		if err != nil || !doc.Has("_id") {
			continue
		}
		fast, ok := cairnTopLevelOf(validated, inclusion).project(doc)
		if !ok {
			continue
		}
		taken++
		if !inclusion {
			excluded++
		}
		want, err := ProjectDocument(doc, validated, nil, inclusion)
		if err != nil {
			t.Fatalf("ProjectDocument(%v, %v): %v", doc, projection, err)
		}
		got, expected := cairnMust(sjson.Marshal(fast)), cairnMust(sjson.Marshal(want))
		if !bytes.Equal(got, expected) || fast.RecordID() != want.RecordID() {
			t.Fatalf("projection %v of %v:\n fast %s\n want %s", projection, doc, got, expected)
		}
	}
	if taken < 2000 || excluded < 2000 {
		t.Fatalf("the fast path took only %d projections, %d of them exclusions", taken, excluded)
	}
	for _, cairn := range []*types.Document{
		cairnMust(types.NewDocument("replicas", int32(1), "owner", int32(1), "group", int32(1), "mode", int32(1))),
		cairnMust(types.NewDocument("meta", int32(0), "meta_origin", int32(0), "version", int32(0))),
	} {
		validated, inclusion, _ := ValidateProjection(cairn)
		if cairnTopLevelOf(validated, inclusion) == nil {
			t.Fatalf("the projection %v of top-level fields is not taken", cairn)
		}
	}
}
