package server

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"trine/gateway/internal/httperr"
	"trine/gateway/internal/tracing"
	"trine/gateway/internal/upstream"
)

// requestInfo collects what inner handlers learn about a request (its route
// and API key) for the access log and metrics written by observe. Only the
// goroutine serving the request touches it, so it needs no lock.
type requestInfo struct {
	route string
	keyID string
}

type requestInfoKey struct{}

// requestState is what observe keeps per request, in one allocation.
type requestState struct {
	info requestInfo
	rec  statusRecorder
}

// requestInfoFrom returns the request's info, or a throwaway value when the
// request did not pass through observe (so callers never check for nil).
func requestInfoFrom(ctx context.Context) *requestInfo {
	if info, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		return info
	}
	return &requestInfo{}
}

// stripInternalToken drops any internal credential a client sent, at the
// edge, so that no handler can ever mistake it for the gateway's own.
func stripInternalToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del(upstream.InternalTokenHeader)
		next.ServeHTTP(w, r)
	})
}

// observe writes one access log line per request and records its metrics.
// It runs in a defer so that aborted responses are counted too.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, timing := upstream.WithTiming(r.Context())
		s.metrics.RequestStarted()
		st := &requestState{
			info: requestInfo{route: unmatchedRoute},
			rec:  statusRecorder{ResponseWriter: w, timing: timing},
		}
		info, rec := &st.info, &st.rec
		ctx = context.WithValue(ctx, requestInfoKey{}, info)
		parent, traced := tracing.Parse(r.Header.Get(tracing.Header))
		if traced {
			ctx = tracing.WithParent(ctx, parent)
		}
		r = r.WithContext(ctx)
		defer func() {
			code := rec.finalStatus(r.Context())
			// One clock reading serves the metrics and the log line.
			end := time.Now()
			elapsed, upstreamTime := end.Sub(timing.Start), timing.Upstream()
			s.metrics.RequestDone(info.route, code, elapsed)
			s.metrics.Overhead(elapsed - upstreamTime)
			if !s.log.Enabled(ctx, slog.LevelInfo) {
				return
			}
			// The record is built here rather than by Logger.LogAttrs,
			// which would read the clock again and walk the stack for a
			// source location that the gateway's log does not record.
			line := slog.NewRecord(end, slog.LevelInfo, "request", 0)
			// Typed attributes, gathered on the stack and added at once,
			// spare the logger boxing them and growing the record twice.
			var buf [10]slog.Attr
			attrs := append(buf[:0],
				slog.String("method", r.Method),
				slog.String("path", r.URL.Path),
				slog.String("route", info.route),
				slog.Int("status", code),
				slog.Int64("bytes", rec.bytes),
				slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
				slog.Float64("upstream_ms", float64(upstreamTime.Microseconds())/1000),
				slog.String("remote", r.RemoteAddr),
			)
			if info.keyID != "" {
				attrs = append(attrs, slog.String("key_id", info.keyID))
			}
			if traced {
				attrs = append(attrs, slog.String("trace_id", parent.TraceID))
			}
			line.AddAttrs(attrs...)
			_ = s.log.Handler().Handle(ctx, line)
		}()
		next.ServeHTTP(rec, r)
	})
}

// statusRecorder remembers the status and size of a response. It unwraps
// to the original writer so that http.ResponseController can still flush.
type statusRecorder struct {
	http.ResponseWriter
	timing *upstream.Timing
	code   int
	bytes  int64
}

// WriteHeader records the first final status; 1xx responses are not final.
// Responses that the proxy did not time itself get the gateway's time so
// far as Server-Timing.
func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 && code >= 200 {
		s.code = code
		// Direct map access: the key is already canonical.
		if h := s.Header(); len(h["Server-Timing"]) == 0 || h["Server-Timing"][0] == "" {
			h["Server-Timing"] = []string{"gw;dur=" + upstream.Millis(s.timing.Overhead())}
		}
	}
	s.ResponseWriter.WriteHeader(code)
}

// Write records the implicit 200 of a first write and counts bytes.
func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.WriteHeader(http.StatusOK)
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

// Unwrap returns the wrapped writer for http.ResponseController.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// finalStatus is the status written, or 499 when nothing was written
// because the client went away (the error adapter sends nothing then).
func (s *statusRecorder) finalStatus(ctx context.Context) int {
	switch {
	case s.code != 0:
		return s.code
	case ctx.Err() != nil:
		return httperr.StatusClientClosedRequest
	default:
		return http.StatusOK
	}
}
