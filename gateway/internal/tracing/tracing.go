// Package tracing continues W3C Trace Context (traceparent) across the
// gateway: the trace id a client sent is kept, and each upstream call gets
// its own span id, so the services' logs join into one trace.
package tracing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
)

// Header is the W3C trace context header.
const Header = "Traceparent"

// Parent is a parsed traceparent (version 00).
type Parent struct {
	// TraceID is 32 lowercase hex digits, not all zero.
	TraceID string
	// SpanID is the caller's span, 16 lowercase hex digits, not all zero.
	SpanID string
	// Flags are the trace flags, two hex digits (01 = sampled).
	Flags string
}

// Parse reads a traceparent header. Only the format this gateway can
// continue is accepted: version 00, or a later version whose first four
// fields look like 00's (the spec asks to parse those the same way).
func Parse(v string) (Parent, bool) {
	// Most requests carry no trace: splitting "" would still allocate.
	if v == "" {
		return Parent{}, false
	}
	parts := strings.Split(strings.TrimSpace(v), "-")
	if len(parts) < 4 {
		return Parent{}, false
	}
	version, trace, span, flags := parts[0], parts[1], parts[2], parts[3]
	if !isHex(version, 2) || version == "ff" || (version == "00" && len(parts) != 4) {
		return Parent{}, false
	}
	if !isHex(trace, 32) || allZero(trace) || !isHex(span, 16) || allZero(span) || !isHex(flags, 2) {
		return Parent{}, false
	}
	return Parent{TraceID: trace, SpanID: span, Flags: flags}, true
}

// New starts a trace for a request that arrived without one.
func New() Parent {
	return Parent{TraceID: randomHex(16), SpanID: randomHex(8), Flags: "01"}
}

// Child returns the context for a call made on behalf of p: the same trace,
// a new span.
func (p Parent) Child() Parent {
	return Parent{TraceID: p.TraceID, SpanID: randomHex(8), Flags: p.Flags}
}

// String formats p as a version 00 traceparent.
func (p Parent) String() string {
	return "00-" + p.TraceID + "-" + p.SpanID + "-" + p.Flags
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	return strings.Trim(s, "0") == ""
}

func randomHex(n int) string {
	b := make([]byte, n)
	for {
		// crypto/rand.Read aborts the program rather than fail.
		_, _ = rand.Read(b)
		if s := hex.EncodeToString(b); !allZero(s) {
			return s
		}
	}
}

type ctxKey struct{}

// WithParent returns ctx carrying the client's trace context.
func WithParent(ctx context.Context, p Parent) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the client's trace context, if it sent a valid one.
func FromContext(ctx context.Context) (Parent, bool) {
	p, ok := ctx.Value(ctxKey{}).(Parent)
	return p, ok
}
