package handler

import (
	"strings"

	"github.com/FerretDB/FerretDB/internal/backends"
	"github.com/FerretDB/FerretDB/internal/types"
)

// cairnGroupCount is the aggregate comment by which a caller asks for its group count to be
// answered by the backend (the SQLite backend: from an index whose first keys are the group's
// fields, cairn_group_count.go there, reading no document). The caller promises nothing: the
// backend answers only where that is exact, and else returns the documents, which the pipeline
// then groups as without the comment.
const cairnGroupCount = "cairn:group-count"

// cairnGroupOf is the backend's group count of an aggregate whose comment is cairnGroupCount
// and whose pipeline is exactly `[{$group: {_id: {<key>: "$<field>", ...}, <out>: {$sum: 1}}}]`
// (keys and fields of letters, digits and underscores, fields at the top level); else nil.
func cairnGroupOf(command *types.Document, pipeline []any) *backends.CairnGroup {
	if comment, _ := command.Get("comment"); comment != any(cairnGroupCount) || len(pipeline) != 1 {
		return nil
	}
	stage, ok := pipeline[0].(*types.Document)
	if !ok || stage.Len() != 1 {
		return nil
	}
	value, _ := stage.Get("$group")
	spec, ok := value.(*types.Document)
	if !ok || spec.Len() != 2 {
		return nil
	}
	value, _ = spec.Get("_id")
	id, ok := value.(*types.Document)
	if !ok || id.Len() == 0 {
		return nil
	}
	group := new(backends.CairnGroup)
	for _, key := range id.Keys() {
		value, _ = id.Get(key)
		path, isString := value.(string)
		if !isString || !strings.HasPrefix(path, "$") || !cairnPlainName(key) || !cairnPlainName(path[1:]) {
			return nil
		}
		group.Fields = append(group.Fields, path[1:])
		group.Keys = append(group.Keys, key)
	}
	for _, key := range spec.Keys() {
		if key == "_id" {
			continue
		}
		value, _ = spec.Get(key)
		accumulator, isDoc := value.(*types.Document)
		if !isDoc || accumulator.Len() != 1 || !cairnPlainName(key) {
			return nil
		}
		switch one, _ := accumulator.Get("$sum"); one {
		case int32(1), int64(1), float64(1):
			group.Out = key
		default:
			return nil
		}
	}
	return group
}

// cairnPlainName: letters, digits and underscores, not starting with a digit.
func cairnPlainName(name string) bool {
	return name != "" && strings.Trim(name, cairnNameChars) == "" && (name[0] < '0' || name[0] > '9')
}
