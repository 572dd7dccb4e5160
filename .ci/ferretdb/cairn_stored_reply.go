package wire

import (
	"github.com/FerretDB/wire/internal/util/lazyerrors"
	"github.com/FerretDB/wire/wirebson"
)

// CairnNewStoredOpMsg is NewOpMsg for a reply whose documents were read from storage, which
// cannot hold NaN: the NaN check that CheckNaNs asks of every message decodes the whole reply
// again (13% of the database's CPU when resolving LFNs) and cannot find anything there. Debug
// builds still check.
func CairnNewStoredOpMsg(doc wirebson.AnyDocument) (*OpMsg, error) {
	raw, err := doc.Encode()
	if err != nil {
		return nil, lazyerrors.Error(err)
	}

	sections := []OpMsgSection{{documents: []wirebson.RawDocument{raw}}}
	if err = checkSections(sections); err != nil {
		return nil, lazyerrors.Error(err)
	}

	msg := OpMsg{sections: sections}
	if Debug {
		if err = msg.check(); err != nil {
			return nil, lazyerrors.Error(err)
		}
	}

	return &msg, nil
}
