package sjson

import (
	"math"
	"math/rand"
	"reflect"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/internal/types"
)

// cairnRandomValue is a value of any type sjson stores, nested up to depth.
func cairnRandomValue(r *rand.Rand, depth int) any {
	kinds := 13
	if depth <= 0 {
		kinds = 11
	}
	switch r.Intn(kinds) {
	case 0:
		return cairnRandomString(r)
	case 1:
		return int32(r.Int63n(1<<32) - 1<<31)
	case 2:
		return r.Int63() - r.Int63()
	case 3:
		return []float64{0, math.Copysign(0, -1), 1.5, -2.25e-300, 1e300, r.NormFloat64(), 42}[r.Intn(7)]
	case 4:
		return time.UnixMilli(r.Int63n(1<<42) - 1<<41)
	case 5:
		return types.Null
	case 6:
		return r.Intn(2) == 0
	case 7:
		var id types.ObjectID
		r.Read(id[:])
		return id
	case 8:
		b := make([]byte, r.Intn(5))
		r.Read(b)
		return types.Binary{B: b, Subtype: types.BinarySubtype(r.Intn(5))}
	case 9:
		return types.Regex{Pattern: cairnRandomString(r), Options: "i"}
	case 10:
		return types.Timestamp(r.Uint64())
	case 11:
		d := types.MakeDocument(0)
		for i, n := 0, r.Intn(5); i < n; i++ {
			d.Set(cairnRandomKey(r), cairnRandomValue(r, depth-1))
		}
		return d
	default:
		a := types.MakeArray(0)
		for i, n := 0, r.Intn(4); i < n; i++ {
			a.Append(cairnRandomValue(r, depth-1))
		}
		return a
	}
}

func cairnRandomString(r *rand.Rand) string {
	parts := []string{"/vo/data", "f00000001.root", "é", "日本", "\"", "\\", "\n", "\x01", "\u2028", "<>&", " ", ""}
	s := ""
	for i, n := 0, r.Intn(4); i < n; i++ {
		s += parts[r.Intn(len(parts))]
	}
	return s
}

func cairnRandomKey(r *rand.Rand) string {
	return []string{"_id", "se", "url", "status", "size", "replicas", "meta", "é", "a.b", "x"}[r.Intn(10)]
}

func cairnRandomDocument(r *rand.Rand) *types.Document {
	d := types.MakeDocument(0)
	d.Set("_id", cairnRandomString(r))
	for i, n := 0, r.Intn(8); i < n; i++ {
		d.Set(cairnRandomKey(r), cairnRandomValue(r, 3))
	}
	return d
}

// cairnDamage holds the bytes a damaged text gets.
const cairnDamage = "{}[]\",:\\ 0a-.1e"

// TestCairnUnmarshalSameAsSjson: the one-pass decoder gives sjsonUnmarshal's document for what
// Marshal writes, and for damaged text either declines or agrees with sjsonUnmarshal.
func TestCairnUnmarshalSameAsSjson(t *testing.T) {
	r := rand.New(rand.NewSource(17))
	fast := 0
	for n := 0; n < 20000; n++ {
		data, err := Marshal(cairnRandomDocument(r))
		if err != nil {
			t.Fatal(err)
		}
		want, wantErr := sjsonUnmarshal(data)
		got, ok := cairnUnmarshal(data)
		if wantErr == nil && !ok {
			t.Fatalf("declined what sjsonUnmarshal decodes: %s", data)
		}
		if ok && (wantErr != nil || !reflect.DeepEqual(types.CairnIndexed(got), want)) {
			t.Fatalf("%s\nsjson: %v %v\ncairn: %v", data, want, wantErr, got)
		}

		damaged := append([]byte(nil), data...)
		switch at := r.Intn(len(damaged)); r.Intn(3) {
		case 0:
			damaged[at] = cairnDamage[r.Intn(len(cairnDamage))]
		case 1:
			damaged = append(damaged[:at], damaged[at+1:]...)
		default:
			damaged = append(damaged[:at], append([]byte{cairnDamage[r.Intn(len(cairnDamage))]}, damaged[at:]...)...)
		}
		want, wantErr = sjsonUnmarshal(damaged)
		if got, ok = cairnUnmarshal(damaged); ok {
			fast++
			if wantErr != nil || !reflect.DeepEqual(types.CairnIndexed(got), want) {
				t.Fatalf("%s\nsjson: %v %v\ncairn: %v", damaged, want, wantErr, got)
			}
		}
	}
	t.Logf("%d damaged texts still decoded, all as sjsonUnmarshal decodes them", fast)
}

// TestCairnUnmarshalCatalogueFile: a file record of Cairn's catalogue, as stored.
func TestCairnUnmarshalCatalogueFile(t *testing.T) {
	data := []byte(`{"$s":{"p":{"_id":{"t":"string"},"size":{"t":"int"},"md5":{"t":"null"},` +
		`"created":{"t":"date"},"replicas":{"t":"array","i":[{"t":"object","$s":{"p":{"se":{"t":"string"},` +
		`"url":{"t":"string"}},"$k":["se","url"]}}]},"meta":{"t":"object","$s":{}}},` +
		`"$k":["_id","size","md5","created","replicas","meta"]},"_id":"/bench/d000/f0.root","size":1000,` +
		`"md5":null,"created":1796251565795,"replicas":[{"se":"DISK1","url":"file:///se/f0.root"}],"meta":{}}`)
	want, err := sjsonUnmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := cairnUnmarshal(data)
	if !ok || !reflect.DeepEqual(types.CairnIndexed(got), want) {
		t.Fatalf("cairn: %v (ok %v), sjson: %v", got, ok, want)
	}
}
