package bson

import (
	"bytes"
	"math"
	"math/rand"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/internal/types"
)

// cairnRandomValue is any BSON value the types package holds, nested up to depth levels.
func cairnRandomValue(r *rand.Rand, depth int) any {
	kinds := 13
	if depth == 0 {
		kinds = 11
	}
	switch r.Intn(kinds) {
	case 0:
		return []float64{0, -1.5, math.Inf(1), math.NaN(), math.MaxFloat64}[r.Intn(5)]
	case 1:
		return []string{"", "a", "/big/f0000000001.root", "é\u2028\x01", string(make([]byte, 300))}[r.Intn(5)]
	case 2:
		return types.Binary{B: []byte{byte(r.Intn(256)), 0, 7}[:r.Intn(4)], Subtype: types.BinarySubtype(r.Intn(9))}
	case 3:
		var id types.ObjectID
		r.Read(id[:])
		return id
	case 4:
		return r.Intn(2) == 0
	case 5:
		return time.UnixMilli(r.Int63n(1<<42) - 1<<41).UTC()
	case 6:
		return types.Null
	case 7:
		return types.Regex{Pattern: "^/a.*", Options: []string{"", "i", "ms"}[r.Intn(3)]}
	case 8:
		return int32(r.Int63n(1<<32) - 1<<31)
	case 9:
		return types.Timestamp(r.Uint64())
	case 10:
		return r.Int63() - r.Int63()
	case 11:
		return cairnRandomDocument(r, depth-1)
	default:
		arr := types.MakeArray(0)
		for i := r.Intn(13); i > 0; i-- {
			arr.Append(cairnRandomValue(r, depth-1))
		}
		return arr
	}
}

func cairnRandomDocument(r *rand.Rand, depth int) *types.Document {
	doc := types.MakeDocument(0)
	for i := r.Intn(8); i > 0; i-- {
		doc.Set([]string{"_id", "a", "replicas", "é", "$k", "x.y", ""}[r.Intn(7)], cairnRandomValue(r, depth))
	}
	return doc
}

// TestCairnAppendBSON: the one-pass encoder writes the bytes FromDocument and Encode write.
func TestCairnAppendBSON(t *testing.T) {
	r := rand.New(rand.NewSource(17))
	for i := 0; i < 20000; i++ {
		doc := cairnRandomDocument(r, 3)
		reference, err := FromDocument(doc)
		if err != nil {
			t.Fatal(err)
		}
		want, err := reference.Encode()
		if err != nil {
			t.Fatal(err)
		}
		prefix := []byte("prefix")[:r.Intn(7)]
		got := doc.CairnAppendBSON(append([]byte(nil), prefix...))
		if !bytes.Equal(got[:len(prefix)], prefix) || !bytes.Equal(got[len(prefix):], want) {
			t.Fatalf("document %d: %v\nwant %x\ngot  %x", i, doc, want, got[len(prefix):])
		}
	}
}
