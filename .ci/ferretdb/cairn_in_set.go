package common

import (
	"sync"

	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/must"
)

// cairnInSets caches, per `$in` array of a filter being applied, the set of its values when
// they are all strings: the handler checks `$in` for every returned document, and a scan of the
// list made a slice of n values cost n² comparisons. The cache holds the array itself, so an
// address is never reused for another array while its entry lives.
var (
	cairnInMu   sync.Mutex
	cairnInSets = map[*types.Array]cairnInSet{}
)

type cairnInSet struct {
	n      int
	values map[string]struct{}
}

const cairnInSetMin = 16
const cairnInSetsMax = 64

// cairnInLookup answers whether the string `value` is in `arr` through a set; ok is false when
// arr is short or holds anything but strings (the caller then scans as before).
func cairnInLookup(arr *types.Array, value string) (found, ok bool) {
	if arr.Len() < cairnInSetMin {
		return false, false
	}
	cairnInMu.Lock()
	set, cached := cairnInSets[arr]
	cairnInMu.Unlock()
	if !cached || set.n != arr.Len() {
		set = cairnInSet{n: arr.Len(), values: make(map[string]struct{}, arr.Len())}
		for i := 0; i < arr.Len(); i++ {
			s, isString := must.NotFail(arr.Get(i)).(string)
			if !isString {
				set.values = nil
				break
			}
			set.values[s] = struct{}{}
		}
		cairnInMu.Lock()
		if len(cairnInSets) >= cairnInSetsMax {
			clear(cairnInSets)
		}
		cairnInSets[arr] = set
		cairnInMu.Unlock()
	}
	if set.values == nil {
		return false, false
	}
	_, found = set.values[value]
	return found, true
}
