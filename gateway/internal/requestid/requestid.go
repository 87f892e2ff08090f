// Package requestid gives every request one identifier that appears in the
// response, in every log line about the request and in upstream calls.
package requestid

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
)

// Header is the HTTP header that carries the request ID in both directions.
const Header = "X-Request-ID"

// MaxLen is the longest client-supplied ID that is kept.
const MaxLen = 128

type ctxKey struct{}

// Valid reports whether id is safe to reuse: 1 to MaxLen characters from
// [A-Za-z0-9._:-]. Anything else could forge log lines or bloat headers.
func Valid(id string) bool {
	if len(id) == 0 || len(id) > MaxLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// New returns a fresh random ID of 32 hexadecimal characters.
func New() string {
	var b [16]byte
	// crypto/rand.Read never returns an error on supported platforms; it
	// aborts the program instead.
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Sanitize returns id if it is Valid and a new ID otherwise.
func Sanitize(id string) string {
	if Valid(id) {
		return id
	}
	return New()
}

// WithID returns a context carrying id.
func WithID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the request ID stored in ctx, or "" if there is none.
func FromContext(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

// Middleware adopts the client's X-Request-ID if it is sane and otherwise
// generates one, then sets it on the response, on the request headers (so
// that anything forwarding them passes the vetted value) and in the context.
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := Sanitize(r.Header.Get(Header))
		r.Header.Set(Header, id)
		w.Header().Set(Header, id)
		next.ServeHTTP(w, r.WithContext(WithID(r.Context(), id)))
	})
}

// LogHandler is a slog.Handler that adds a request_id attribute to every
// record logged with a context that carries one, so that call sites only
// need to pass ctx to the *Context logging methods.
type LogHandler struct {
	slog.Handler
}

// NewLogHandler wraps h.
func NewLogHandler(h slog.Handler) *LogHandler {
	return &LogHandler{Handler: h}
}

// Handle adds the request ID, if any, and passes the record on.
func (h *LogHandler) Handle(ctx context.Context, rec slog.Record) error {
	if id := FromContext(ctx); id != "" {
		rec.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, rec)
}

// WithAttrs keeps the wrapper around the derived handler.
func (h *LogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &LogHandler{Handler: h.Handler.WithAttrs(attrs)}
}

// WithGroup keeps the wrapper around the derived handler.
func (h *LogHandler) WithGroup(name string) slog.Handler {
	return &LogHandler{Handler: h.Handler.WithGroup(name)}
}
