// Package jsonbody reads and checks the JSON request bodies of public POST
// routes before they are forwarded. The gateway only checks the envelope (a
// JSON object within the size limit); the fields belong to the upstream.
package jsonbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"

	"trine/gateway/internal/httperr"
)

// Read returns the request body after checking that it is declared as
// application/json, is at most limit bytes and is a JSON object. Failures are
// *httperr.Error values with the public statuses 415, 413 and 400.
func Read(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if !isJSON(r.Header.Get("Content-Type")) {
		return nil, httperr.New(http.StatusUnsupportedMediaType, httperr.TypeUnsupportedMediaType,
			"Content-Type must be application/json")
	}
	// Built only when needed: most bodies fit.
	tooLarge := func() error {
		return httperr.New(http.StatusRequestEntityTooLarge, httperr.TypePayloadTooLarge,
			"request body exceeds "+strconv.FormatInt(limit, 10)+" bytes")
	}
	// A declared length over the limit is refused before reading anything.
	if r.ContentLength > limit {
		return nil, tooLarge()
	}
	// MaxBytesReader also makes the server close the connection after an
	// oversized body instead of reading the rest of it.
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return nil, tooLarge()
		case r.Context().Err() != nil:
			return nil, httperr.ClientClosed(err)
		default:
			return nil, httperr.Wrap(http.StatusBadRequest, httperr.TypeInvalidRequest,
				"could not read the request body", err)
		}
	}
	if !json.Valid(data) {
		return nil, httperr.New(http.StatusBadRequest, httperr.TypeInvalidRequest, "request body is not valid JSON")
	}
	// Every route takes an object; json.Valid has already ruled out
	// anything but whitespace before the first value.
	if bytes.TrimLeft(data, " \t\r\n")[0] != '{' {
		return nil, httperr.New(http.StatusBadRequest, httperr.TypeInvalidRequest, "request body must be a JSON object")
	}
	return data, nil
}

// isJSON reports whether a Content-Type names application/json. The plain
// form that nearly every client sends is recognised without parsing, which
// would build a map of parameters on every request.
func isJSON(contentType string) bool {
	if contentType == "application/json" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}
