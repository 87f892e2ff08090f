package h1server

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// pendingMax is how much body is held back, waiting to learn its length,
// before the answer goes out chunked.
const pendingMax = 4 << 10

// response is the http.ResponseWriter (and http.Flusher) of one request.
type response struct {
	c      *conn
	req    *http.Request
	header http.Header

	status      int   // the final status, once decided
	wroteHeader bool  // the final status is decided
	headerSent  bool  // the status line and headers are in the write buffer
	declared    int64 // the handler's Content-Length, -1 if none
	written     int64 // body bytes the handler wrote
	noBody      bool  // HEAD, or a status that carries no body
	chunked     bool
	closeAfter  bool  // the connection ends with this answer
	err         error // the first failed write: the client is gone
}

func newResponse(c *conn, req *http.Request) *response {
	c.pending = c.pending[:0]
	return &response{c: c, req: req, header: make(http.Header), declared: -1}
}

func (w *response) Header() http.Header { return w.header }

// WriteHeader sends informational (1xx) answers at once and records the
// final status; the headers go out with the first flush or at the end.
func (w *response) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.writeStatus(code)
		w.writeFields(false)
		_, _ = w.c.bw.WriteString("\r\n")
		w.fail(w.c.bw.Flush())
		return
	}
	w.wroteHeader = true
	w.status = code
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.declared = n
		}
	}
	w.noBody = w.req.Method == http.MethodHead || !bodyAllowed(code)
}

// bodyAllowed reports whether a status may carry a body (RFC 9110 §6.4.1).
func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

func (w *response) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.req.Method == http.MethodHead {
		return len(p), nil
	}
	if w.err != nil {
		return 0, w.err
	}
	c := w.c
	if !w.headerSent {
		if w.declared < 0 && len(c.pending)+len(p) <= pendingMax {
			c.pending = append(c.pending, p...)
			return len(p), nil
		}
		w.sendHeader(false, p)
	}
	w.writeBody(p)
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// FlushError sends everything written so far; it makes the response an
// http.Flusher for http.ResponseController.
func (w *response) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headerSent {
		w.sendHeader(false, nil)
	}
	if w.err == nil {
		w.fail(w.c.bw.Flush())
	}
	return w.err
}

// Flush is FlushError for the http.Flusher interface.
func (w *response) Flush() { _ = w.FlushError() }

// finish completes the answer after the handler returned and reports
// whether it reached the client.
func (w *response) finish() bool {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headerSent {
		w.sendHeader(true, nil)
	}
	if w.chunked {
		_, _ = w.c.bw.WriteString("0\r\n\r\n")
	}
	if w.declared >= 0 && w.written < w.declared && !w.noBody {
		// The client waits for bytes that will never come; only the
		// connection's end can tell it.
		w.closeAfter = true
	}
	if w.err == nil {
		w.fail(w.c.bw.Flush())
	}
	return w.err == nil
}

func (w *response) fail(err error) {
	if err != nil && w.err == nil {
		w.err = err
	}
}

// sendHeader writes the status line and headers, framing the body: by the
// declared length, by the whole body when the handler has returned (final),
// else chunked. first is the start of the body, for sniffing its type, when
// none was held back. Held-back body bytes follow the headers.
func (w *response) sendHeader(final bool, first []byte) {
	w.headerSent = true
	c, h := w.c, w.header
	pending := c.pending
	if len(first) == 0 {
		first = pending
	}
	if _, ok := h["Content-Type"]; !ok && !w.noBody && len(first) > 0 {
		h["Content-Type"] = []string{http.DetectContentType(first)}
	}
	if w.req.Close || !w.req.ProtoAtLeast(1, 1) || c.srv.closing.Load() || hasToken(h["Connection"], "close") {
		w.closeAfter = true
	}
	w.writeStatus(w.status)
	w.writeFields(true)
	switch {
	case !bodyAllowed(w.status):
	case w.declared >= 0:
		writeField(c, "Content-Length", strconv.FormatInt(w.declared, 10))
	case final && (w.req.Method != http.MethodHead || w.written > 0):
		writeField(c, "Content-Length", strconv.FormatInt(w.written, 10))
	case w.req.Method == http.MethodHead:
	case w.req.ProtoAtLeast(1, 1):
		w.chunked = true
		writeField(c, "Transfer-Encoding", "chunked")
	default:
		// An HTTP/1.0 client reads the body to the connection's end.
		w.closeAfter = true
	}
	if w.closeAfter {
		writeField(c, "Connection", "close")
	}
	_, _ = c.bw.WriteString("\r\n")
	if len(pending) > 0 {
		w.writeBody(pending)
	}
}

func (w *response) writeBody(p []byte) {
	bw := w.c.bw
	if w.chunked {
		_, _ = bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		_, _ = bw.WriteString("\r\n")
	}
	_, err := bw.Write(p)
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	w.fail(err)
}

func (w *response) writeStatus(code int) {
	bw := w.c.bw
	_, _ = bw.WriteString("HTTP/1.1 ")
	_, _ = bw.WriteString(strconv.Itoa(code))
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(http.StatusText(code))
	_, _ = bw.WriteString("\r\n")
}

// managed reports the fields the server frames the answer with itself.
func managed(k string) bool {
	return k == "Content-Length" || k == "Transfer-Encoding" || k == "Connection"
}

// writeFields writes the handler's header fields, skipping invalid names
// and the framing fields when final, and adds Date when the handler set
// none.
func (w *response) writeFields(final bool) {
	c := w.c
	for k, vs := range w.header {
		if final && managed(k) || !validFieldName(k) {
			continue
		}
		for _, v := range vs {
			writeField(c, k, v)
		}
	}
	if final {
		if _, ok := w.header["Date"]; !ok {
			writeField(c, "Date", httpDate())
		}
	}
}

// writeField writes one header line; line breaks in the value become
// spaces, so that no value can add a header of its own.
func writeField(c *conn, k, v string) {
	bw := c.bw
	_, _ = bw.WriteString(k)
	_, _ = bw.WriteString(": ")
	if strings.ContainsAny(v, "\r\n") {
		v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
	}
	_, _ = bw.WriteString(v)
	_, _ = bw.WriteString("\r\n")
}

// validFieldName reports whether k is an HTTP token (RFC 9110 §5.1).
func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		b := k[i]
		if b <= ' ' || b >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, b) >= 0 {
			return false
		}
	}
	return true
}

// hasToken reports whether a comma-separated header holds token.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

// date caches the Date header's value for the current second.
type date struct {
	unix int64
	text string
}

var lastDate atomic.Pointer[date]

func httpDate() string {
	now := time.Now()
	if d := lastDate.Load(); d != nil && d.unix == now.Unix() {
		return d.text
	}
	d := &date{unix: now.Unix(), text: now.UTC().Format(http.TimeFormat)}
	lastDate.Store(d)
	return d.text
}
