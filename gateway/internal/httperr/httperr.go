// Package httperr is the gateway's single way of turning a failure into an
// HTTP response: handlers return an *Error (or any error), and Write renders
// the public error envelope. Keeping the client message apart from the logged
// cause means internal detail never reaches a client by accident.
package httperr

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"trine/gateway/internal/requestid"
)

// Error types of the public API (docs/public-api.md). The status code that
// goes with each is fixed by that table.
const (
	TypeInvalidRequest       = "invalid_request"
	TypeUnauthorized         = "unauthorized"
	TypeForbidden            = "forbidden"
	TypeNotFound             = "not_found"
	TypeConflict             = "conflict"
	TypeMethodNotAllowed     = "method_not_allowed"
	TypePayloadTooLarge      = "payload_too_large"
	TypeUnsupportedMediaType = "unsupported_media_type"
	TypeRateLimited          = "rate_limited"
	TypeUpstreamError        = "upstream_error"
	TypeUnavailable          = "unavailable"
	TypeUpstreamTimeout      = "upstream_timeout"
	TypeInternal             = "internal_error"
)

// StatusClientClosedRequest is the non-standard status (nginx, Caddy) that
// records a request whose client went away before an answer was ready. It is
// logged and counted but never written, since nobody is left to read it.
const StatusClientClosedRequest = 499

// Error is a failure with everything needed to answer the client and to log
// the cause. Msg is shown to the client; Err is only logged.
type Error struct {
	// Code is the HTTP status.
	Code int
	// Type is the envelope's machine-readable error type.
	Type string
	// Msg is the human-readable message sent to the client. It must never
	// contain internal detail.
	Msg string
	// Err is the underlying cause, logged but never sent. May be nil.
	Err error
	// Header holds extra response headers such as Allow or Retry-After.
	Header http.Header
}

// Error implements error with the log-facing description.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.Code, e.Type, e.Msg, e.Err)
	}
	return fmt.Sprintf("%d %s: %s", e.Code, e.Type, e.Msg)
}

// Unwrap exposes the cause to errors.Is and errors.As.
func (e *Error) Unwrap() error { return e.Err }

// New returns an Error with the given status, type and client message.
func New(code int, typ, msg string) *Error {
	return &Error{Code: code, Type: typ, Msg: msg}
}

// Wrap returns an Error with the given status, type and client message whose
// cause err is logged but not sent.
func Wrap(code int, typ, msg string, err error) *Error {
	return &Error{Code: code, Type: typ, Msg: msg, Err: err}
}

// WithHeader returns e with an extra response header set, for chaining.
func (e *Error) WithHeader(key, value string) *Error {
	if e.Header == nil {
		e.Header = make(http.Header)
	}
	e.Header.Set(key, value)
	return e
}

// Unavailable returns a 503 asking the client to retry after the given delay,
// rounded up to whole seconds as Retry-After requires.
func Unavailable(msg string, retryAfter time.Duration, err error) *Error {
	secs := int((retryAfter + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	return Wrap(http.StatusServiceUnavailable, TypeUnavailable, msg, err).
		WithHeader("Retry-After", strconv.Itoa(secs))
}

// ClientClosed returns the 499 error for a client that went away.
func ClientClosed(err error) *Error {
	return Wrap(StatusClientClosedRequest, "client_closed_request", "client closed the request", err)
}

// As converts any error into an *Error. Errors that are not already one are
// unexpected bugs: they become a 500 whose message reveals nothing.
func As(err error) *Error {
	var he *Error
	if errors.As(err, &he) {
		return he
	}
	return Wrap(http.StatusInternalServerError, TypeInternal, "internal error", err)
}

// Handler is an http.Handler that reports failure by returning an error,
// which Write then renders; this keeps every error response in one place.
type Handler struct {
	// Log receives one line per failed request.
	Log *slog.Logger
	// Serve handles the request.
	Serve func(w http.ResponseWriter, r *http.Request) error
}

// ServeHTTP calls Serve and writes any error it returns.
func (h Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h.Serve(w, r); err != nil {
		Write(w, r, h.Log, err)
	}
}

type envelope struct {
	Error body `json:"error"`
}

type body struct {
	Type      string `json:"type"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// Write logs err and sends its envelope. A 499 is logged only: the client is
// gone. Server-side failures (5xx) log at warn level or above so that
// upstream trouble stands out from clients' mistakes.
func Write(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	he := As(err)
	ctx := r.Context()
	attrs := []any{"status", he.Code, "type", he.Type, "message", he.Msg}
	if he.Err != nil {
		attrs = append(attrs, "cause", he.Err.Error())
	}
	switch {
	case he.Code == http.StatusInternalServerError:
		log.ErrorContext(ctx, "request failed", attrs...)
	case he.Code >= 500 || he.Code == StatusClientClosedRequest:
		log.WarnContext(ctx, "request failed", attrs...)
	default:
		log.InfoContext(ctx, "request rejected", attrs...)
	}
	if he.Code == StatusClientClosedRequest {
		return
	}
	h := w.Header()
	for k, vs := range he.Header {
		h[k] = append([]string(nil), vs...)
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(he.Code)
	// The envelope is built from strings only, so encoding cannot fail; a
	// write error means the client left, which there is no one to tell.
	_ = json.NewEncoder(w).Encode(envelope{Error: body{
		Type:      he.Type,
		Message:   he.Msg,
		RequestID: requestid.FromContext(ctx),
	}})
}
