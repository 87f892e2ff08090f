// Package fanout sends one RAG query to several ML replicas: to all of them
// at once ("fanout": "all"), or to a second one when the first is slow
// ("fanout": "hedge").
package fanout

import (
	"encoding/json"
	"net/http"

	"trine/gateway/internal/httperr"
)

// Mode is how a RAG query is spread over the replicas.
type Mode string

// Modes of the "fanout" field (docs/public-api.md).
const (
	// Single sends the query to one load-balanced replica (the default).
	Single Mode = ""
	// All sends it to every available replica and returns every answer.
	All Mode = "all"
	// Hedge sends it to a second replica if the first is slow, and returns
	// whichever answers first.
	Hedge Mode = "hedge"
)

// options are the body fields the gateway reads; everything else belongs
// to the ML service. The body is forwarded unchanged, fanout included,
// since the ML service ignores fields it does not know.
type options struct {
	Fanout *string `json:"fanout"`
	Stream *bool   `json:"stream"`
}

// ParseMode reads the fanout mode of a RAG query body, already checked to
// be a JSON object. A fanout that is not one of the known strings, or a
// stream that is not a boolean, is the client's error; so is asking for
// every replica's answer as one event stream, which has no defined shape.
func ParseMode(body []byte) (Mode, error) {
	if !mayName(body) {
		return Single, nil
	}
	return decodeMode(body)
}

// decodeMode is ParseMode without the scan that spares most bodies the
// decoding.
func decodeMode(body []byte) (Mode, error) {
	var o options
	if err := json.Unmarshal(body, &o); err != nil {
		return Single, httperr.Wrap(http.StatusBadRequest, httperr.TypeInvalidRequest,
			`"fanout" must be "all" or "hedge" and "stream" a boolean`, err)
	}
	if o.Fanout == nil {
		return Single, nil
	}
	switch m := Mode(*o.Fanout); m {
	case All:
		if o.Stream != nil && *o.Stream {
			return Single, httperr.New(http.StatusBadRequest, httperr.TypeInvalidRequest,
				`"fanout": "all" cannot be combined with "stream": true`)
		}
		return m, nil
	case Hedge:
		return m, nil
	default:
		return Single, httperr.New(http.StatusBadRequest, httperr.TypeInvalidRequest,
			`"fanout" must be "all" or "hedge"`)
	}
}

// mayName reports whether body could hold a "fanout" or "stream" member.
// Most queries hold neither, and telling so by a scan costs a fraction of
// decoding them. Decoding matches names case-insensitively, with Unicode
// folding (so "ſtream" is "stream") and escapes (so "\u0066anout" is
// "fanout"): a body is passed over only if it has no backslash and neither
// "anout" nor "tream" in any ASCII case, letters that fold to nothing
// outside ASCII.
func mayName(body []byte) bool {
	for i, c := range body {
		switch {
		case c == '\\',
			c|0x20 == 'a' && hasFoldAt(body[i:], "anout"),
			c|0x20 == 't' && hasFoldAt(body[i:], "tream"):
			return true
		}
	}
	return false
}

// hasFoldAt reports whether b starts with lower, a lowercase ASCII word, in
// any ASCII case.
func hasFoldAt(b []byte, lower string) bool {
	if len(b) < len(lower) {
		return false
	}
	for j := range len(lower) {
		if b[j]|0x20 != lower[j] {
			return false
		}
	}
	return true
}
