package h1server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// errClientGone is the cause of a request context cancelled because the
// client closed its connection.
var errClientGone = errors.New("client closed the connection")

// errHeaderTooLarge ends a request whose headers exceed MaxHeaderBytes.
var errHeaderTooLarge = errors.New("request headers too large")

// aLongTimeAgo is a deadline in the past: setting it unblocks a read at once.
var aLongTimeAgo = time.Unix(1, 0)

// discardLimit is how much of a request body the handler left unread is
// read and dropped to keep the connection; net/http uses the same figure.
const discardLimit = 256 << 10

// conn is one client connection, served by its own goroutine.
type conn struct {
	srv    *Server
	nc     net.Conn
	rd     *connReader
	br     *bufio.Reader
	bw     *bufio.Writer
	remote string
	// pending keeps a short response body until its framing is known.
	pending []byte

	// idle is set while the connection waits for a request, for Shutdown.
	idle atomic.Bool
	// busy is the number of the request being served, 0 between requests;
	// seen is the one the last sweep found (the sweeper's alone).
	busy atomic.Uint64
	seen uint64
	// bodyRead is set once the request body was read to its end, when the
	// connection may be read by a watcher.
	bodyRead atomic.Bool
	// linger is set when the connection ends with request bytes unread:
	// closing it at once would reset it, and the client could lose the
	// answer.
	linger bool

	mu       sync.Mutex // guards the fields below
	cancel   context.CancelCauseFunc
	watching chan struct{} // closed when the watcher returns
	aborting bool          // the watcher's read is being ended on purpose
	gone     bool          // the watcher saw the client leave
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, remote: nc.RemoteAddr().String()}
	c.rd = &connReader{nc: nc, limit: -1}
	c.br = bufio.NewReaderSize(c.rd, 4<<10)
	c.bw = bufio.NewWriterSize(nc, 4<<10)
	return c
}

// connReader reads from the connection, first returning a byte that a
// watcher read, and caps the bytes read while limit >= 0.
type connReader struct {
	nc      net.Conn
	limit   int64
	byte    byte
	hasByte bool
}

func (r *connReader) Read(p []byte) (int, error) {
	if r.limit == 0 {
		return 0, errHeaderTooLarge
	}
	if r.limit > 0 && int64(len(p)) > r.limit {
		p = p[:r.limit]
	}
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var err error
	if r.hasByte {
		p[0], r.hasByte, n = r.byte, false, 1
	} else {
		n, err = r.nc.Read(p)
	}
	if r.limit > 0 {
		r.limit -= int64(n)
	}
	return n, err
}

func (c *conn) serve() {
	defer func() {
		if c.linger {
			c.closeWriteAndWait()
		}
		c.nc.Close()
		c.srv.untrack(c)
	}()
	for seq := uint64(1); ; seq++ {
		// The header cap counts from the request's first byte, which
		// next may already buffer.
		c.rd.limit = int64(c.srv.maxHeaderBytes()) + 4096
		if !c.next(seq == 1) {
			return
		}
		if !c.serveOne(seq) || c.srv.closing.Load() {
			return
		}
	}
}

// next waits for the first byte of the next request: on a new connection
// within the header timeout, on a kept-alive one within the idle timeout.
// False means the connection is done.
func (c *conn) next(first bool) bool {
	if c.br.Buffered() > 0 || c.rd.hasByte {
		return true
	}
	// The last request's deadlines no longer apply.
	var deadline time.Time
	if first {
		deadline = c.srv.headerDeadline(time.Now())
	} else if d := c.srv.IdleTimeout; d > 0 {
		deadline = time.Now().Add(d)
	}
	_ = c.nc.SetReadDeadline(deadline)
	c.idle.Store(true)
	_, err := c.br.Peek(1)
	c.idle.Store(false)
	return err == nil && !c.srv.closing.Load()
}

// serveOne reads and answers one request; it reports whether the
// connection can carry another.
func (c *conn) serveOne(seq uint64) (keep bool) {
	s := c.srv
	start := time.Now()
	hdrDeadline := s.headerDeadline(start)
	_ = c.nc.SetReadDeadline(hdrDeadline)
	req, err := http.ReadRequest(c.br)
	c.rd.limit = -1
	if err != nil {
		return c.rejectRead(err)
	}
	if status, msg := check(req); status != 0 {
		c.reject(req, status, msg)
		return false
	}
	if req.Body != http.NoBody {
		var reqDeadline time.Time
		if d := s.ReadTimeout; d > 0 {
			reqDeadline = start.Add(d)
		}
		if !reqDeadline.Equal(hdrDeadline) {
			_ = c.nc.SetReadDeadline(reqDeadline)
		}
	}

	// Not derived from a server-wide context: every request would then
	// take that context's lock twice. Close cancels requests one by one.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(context.Canceled)
	req = req.WithContext(ctx)
	req.RemoteAddr = c.remote
	w := newResponse(c, req)
	c.bodyRead.Store(req.Body == http.NoBody)
	var b *body
	if req.Body != http.NoBody {
		b = &body{rc: req.Body, c: c, w: w, expect: strings.EqualFold(req.Header.Get("Expect"), "100-continue")}
		req.Body = b
	}
	c.mu.Lock()
	c.cancel = cancel
	if s.closed.Load() {
		// Close went through the connections before this request began.
		cancel(http.ErrServerClosed)
	}
	c.mu.Unlock()
	c.busy.Store(seq)

	panicked := c.runHandler(w, req)

	// A client that half-closed its side still reads the answer, so one
	// is sent if the handler wrote any; nothing follows it.
	gone := !c.endWatch()
	if panicked || gone && !w.wroteHeader || !w.finish() || gone {
		return false
	}
	// A client still waiting for 100 Continue has not sent the body, so
	// there is nothing to drain and the connection cannot be reused.
	return !w.closeAfter && (b == nil || !b.expect) && c.drain(req)
}

// runHandler calls the handler and reports whether it panicked. A panic
// other than http.ErrAbortHandler is logged with its stack, as net/http
// does; either way the connection is closed without finishing the answer.
func (c *conn) runHandler(w *response, req *http.Request) (panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			panicked = true
			if v != http.ErrAbortHandler {
				c.srv.logger().Error("handler panicked", "remote", c.remote,
					"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			}
		}
	}()
	c.srv.Handler.ServeHTTP(w, req)
	return false
}

// drain reads what the handler left of the request body, up to
// discardLimit, so the connection can carry the next request.
func (c *conn) drain(req *http.Request) bool {
	if c.bodyRead.Load() {
		return true
	}
	n, err := io.CopyN(io.Discard, req.Body, discardLimit+1)
	if err == io.EOF && n <= discardLimit {
		return true
	}
	c.linger = true
	return false
}

// lingerFor bounds the wait for the client to stop sending once the answer
// is out; net/http waits as long.
const lingerFor = 500 * time.Millisecond

// closeWriteAndWait ends the answer's direction of the connection and reads
// and drops what the client still sends for a while, so that the kernel
// does not reset the connection under an answer the client has yet to read.
func (c *conn) closeWriteAndWait() {
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(lingerFor))
	_, _ = io.Copy(io.Discard, c.nc)
}

// check applies the rules ReadRequest leaves to servers (those of
// net/http's own server), returning a status and message for a request to
// refuse.
func check(req *http.Request) (int, string) {
	if req.ProtoMajor != 1 {
		return http.StatusHTTPVersionNotSupported, "unsupported protocol version"
	}
	// ReadRequest has moved the Host header (or an absolute URL's host)
	// to req.Host; an HTTP/1.1 request must have one.
	switch {
	case req.ProtoAtLeast(1, 1) && req.Host == "":
		return http.StatusBadRequest, "missing required Host header"
	case !validHost(req.Host):
		return http.StatusBadRequest, "malformed Host header"
	}
	if e := req.Header.Get("Expect"); e != "" && !strings.EqualFold(e, "100-continue") {
		return http.StatusExpectationFailed, "unsupported Expect header"
	}
	return 0, ""
}

// validHost accepts the characters a host, a port and an IPv6 literal are
// made of, which also rules out anything that could split a header.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		b := h[i]
		if b <= ' ' || b >= 0x7f || strings.IndexByte(`"<>\^`+"`{|}", b) >= 0 {
			return false
		}
	}
	return true
}

// rejectRead answers a request that could not be read, unless the client
// went away or timed out, when there is no one to answer. It always ends
// the connection.
func (c *conn) rejectRead(err error) bool {
	switch {
	case errors.Is(err, errHeaderTooLarge):
		c.reject(nil, http.StatusRequestHeaderFieldsTooLarge, "request headers too large")
		c.linger = true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, os.ErrDeadlineExceeded):
	default:
		var ne net.Error
		if !errors.As(err, &ne) {
			c.reject(nil, http.StatusBadRequest, "malformed HTTP request")
		}
	}
	return false
}

// reject answers with status through the server's Reject and closes the
// connection after it. req may be nil when none could be read.
func (c *conn) reject(req *http.Request, status int, msg string) {
	if req == nil {
		req = &http.Request{Method: http.MethodGet, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}}
	}
	req = req.WithContext(context.Background())
	req.RemoteAddr = c.remote
	w := newResponse(c, req)
	w.closeAfter = true
	if c.srv.Reject != nil {
		c.srv.Reject(w, status, msg)
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, msg)
	}
	w.finish()
}

// body marks the connection readable by a watcher once the request body
// has been read to its end, and sends 100 Continue before the first read
// when the client asked for it.
type body struct {
	rc     io.ReadCloser
	c      *conn
	w      *response
	expect bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.expect {
		b.expect = false
		if !b.w.headerSent {
			_, _ = b.c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if err := b.c.bw.Flush(); err != nil {
				return 0, err
			}
		}
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.c.bodyRead.Store(true)
	}
	return n, err
}

func (b *body) Close() error { return b.rc.Close() }
