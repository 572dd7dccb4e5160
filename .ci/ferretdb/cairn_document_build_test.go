package types

import (
	"maps"
	"math/rand"
	"reflect"
	"testing"
)

// TestCairnAdd: a document built by CairnAdd, without a key index, answers Has, Get, Set,
// Remove, Keys and Values as the same document built by Set, through random changes.
func TestCairnAdd(t *testing.T) {
	r := rand.New(rand.NewSource(17))
	keys := []string{"_id", "a", "b", "replicas", ""}
	for i := 0; i < 5000; i++ {
		built, lazy := MakeDocument(0), CairnMakeDocument(0)
		for _, k := range keys[:r.Intn(len(keys)+1)] {
			built.Set(k, int32(i))
			if !lazy.CairnAdd(k, int32(i)) || lazy.CairnAdd(k, "again") {
				t.Fatalf("CairnAdd(%q) of a new key did not add it, or added it twice", k)
			}
		}
		for step := 0; step < 6; step++ {
			k := keys[r.Intn(len(keys))]
			switch r.Intn(3) {
			case 0:
				built.Set(k, int64(step))
				lazy.Set(k, int64(step))
			case 1:
				if a, b := built.Remove(k), lazy.Remove(k); a != b {
					t.Fatalf("Remove(%q): %v, lazily %v", k, a, b)
				}
			default:
				if built.CairnAdd(k, "new") != lazy.CairnAdd(k, "new") {
					t.Fatalf("CairnAdd(%q) answered differently", k)
				}
			}
			for _, k := range keys {
				a, _ := built.Get(k)
				b, _ := lazy.Get(k)
				if built.Has(k) != lazy.Has(k) || a != b || built.isKeyDuplicate(k) != lazy.isKeyDuplicate(k) {
					t.Fatalf("after step %d, key %q: Has/Get/duplicate differ", step, k)
				}
			}
			if !reflect.DeepEqual(built.Keys(), lazy.Keys()) || !reflect.DeepEqual(built.Values(), lazy.Values()) {
				t.Fatalf("after step %d: %v, lazily %v", step, built, lazy)
			}
		}
		// Where a document has an index, it counts exactly its fields' keys.
		for _, d := range []*Document{built, lazy} {
			if d.keys != nil && !maps.Equal(d.keys, d.cairnIndex()) {
				t.Fatalf("index %v of %v", d.keys, d)
			}
		}
	}
}
