// Package h1client is an HTTP/1.1 client for plain-HTTP upstreams that does
// each exchange in the calling goroutine.
//
// http.Transport gives every pooled connection a reader and a writer
// goroutine, so one round trip wakes three goroutines that hand the request
// and the response to each other; on a small machine those wake-ups, not
// the bytes, are most of what a relay hop costs. Client writes the request
// and reads the response itself: the caller parks once, on the socket, and
// the network poller wakes it when the answer arrives. Parsing is
// net/http's own (ReadResponse), so framing (Content-Length, chunked,
// trailers, bodies ended by closing the connection) is the standard
// library's; requests are written as Request.Write writes them, the plain
// ones directly (writeRequest).
package h1client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// MaxHeaderBytes caps the status line and headers of a response, so that a
// broken upstream cannot make the client buffer without end.
const MaxHeaderBytes = 1 << 20

// maxInterim caps the informational (1xx) responses skipped before the
// final one.
const maxInterim = 5

// errHeaderTooLarge is returned when a response's headers exceed
// MaxHeaderBytes.
var errHeaderTooLarge = fmt.Errorf("response headers exceed %d bytes", MaxHeaderBytes)

// errBodyClosed is returned by reads of a body after Close or after its end.
var errBodyClosed = errors.New("h1client: read on closed response body")

// aLongTimeAgo is a deadline in the past: setting it unblocks any read or
// write on the connection at once.
var aLongTimeAgo = time.Unix(1, 0)

// Client is an http.RoundTripper for "http" URLs. Connections are kept per
// host:port and reused only after a response was read to its end with
// nothing left over. A Client is safe for concurrent use; its zero value is
// not usable, build it with New.
type Client struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle     int
	idleTimeout time.Duration

	mu   sync.Mutex         // guards idle
	idle map[string][]*conn // per host:port, most recently used last
}

// New returns a client that opens connections with dial and keeps at most
// maxIdle idle connections per host, each for at most idleTimeout.
func New(dial func(ctx context.Context, network, addr string) (net.Conn, error), maxIdle int, idleTimeout time.Duration) *Client {
	return &Client{dial: dial, maxIdle: maxIdle, idleTimeout: idleTimeout, idle: make(map[string][]*conn)}
}

// conn is one upstream connection with its buffers. Only the exchange that
// took it from the pool touches it until it is put back.
type conn struct {
	nc        net.Conn
	lr        *headerLimit
	br        *bufio.Reader
	bw        *bufio.Writer
	addr      string
	idleSince time.Time
	reused    bool
}

// headerLimit lets at most n bytes through while n >= 0, so that only the
// header phase of a response is capped; n < 0 means no limit.
type headerLimit struct {
	r io.Reader
	n int64
}

func (l *headerLimit) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.r.Read(p)
	}
	if l.n == 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// RoundTrip sends req and returns once the response headers have arrived;
// the caller must read the body to its end or close it. The request's
// context bounds the whole exchange, reading the body included: when it is
// done, blocked reads and writes return at once. A request on a kept-alive
// connection that the upstream had closed before sending any byte back is
// sent once more on a new connection, as the upstream cannot have acted on
// it.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" {
		return nil, fmt.Errorf("h1client: unsupported scheme %q", req.URL.Scheme)
	}
	ctx := req.Context()
	addr := hostPort(req.URL)
	for attempt := 0; ; attempt++ {
		cn, err := c.get(ctx, addr)
		if err != nil {
			return nil, err
		}
		resp, err := c.exchange(ctx, cn, req)
		if err == nil {
			return resp, nil
		}
		var closed *idleClosedError
		if !errors.As(err, &closed) || attempt > 0 || ctx.Err() != nil {
			return nil, err
		}
		if req, err = rewind(req); err != nil {
			return nil, err
		}
	}
}

// idleClosedError reports that a kept-alive connection ended before any
// byte of the response arrived.
type idleClosedError struct{ err error }

func (e *idleClosedError) Error() string {
	return "upstream closed a kept-alive connection: " + e.err.Error()
}

func (e *idleClosedError) Unwrap() error { return e.err }

// rewind returns req with a fresh copy of its body, for sending again.
func rewind(req *http.Request) (*http.Request, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, nil
	}
	if req.GetBody == nil {
		return nil, errors.New("h1client: request body cannot be sent again")
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	again := *req
	again.Body = body
	return &again, nil
}

// exchange writes req on cn and reads the response headers. On failure cn
// is closed.
func (c *Client) exchange(ctx context.Context, cn *conn, req *http.Request) (*http.Response, error) {
	stop := context.AfterFunc(ctx, func() { _ = cn.nc.SetDeadline(aLongTimeAgo) })
	fail := func(err error) (*http.Response, error) {
		stop()
		cn.nc.Close()
		if ctx.Err() != nil {
			return nil, ctxError{ctx: ctx.Err(), cause: err}
		}
		return nil, err
	}
	writeErr := writeRequest(cn.bw, req)
	if writeErr == nil {
		writeErr = cn.bw.Flush()
	}
	// Even after a failed write the upstream may have answered (a 413
	// before reading a large body, say), so the answer is still read.
	cn.lr.n = MaxHeaderBytes
	if _, err := cn.br.Peek(1); err != nil {
		if writeErr != nil {
			err = writeErr
		}
		if cn.reused {
			err = &idleClosedError{err}
		}
		return fail(err)
	}
	resp, err := readFinal(cn.br, req)
	cn.lr.n = -1
	if err != nil {
		return fail(err)
	}
	reusable := writeErr == nil && !resp.Close
	if resp.Body == http.NoBody {
		release(c, cn, stop, reusable)
		return resp, nil
	}
	resp.Body = &body{rc: resp.Body, ctx: ctx, client: c, cn: cn, stop: stop, reusable: reusable}
	return resp, nil
}

// readFinal reads responses until a final (non-1xx) one.
func readFinal(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	for range maxInterim {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, err
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, errors.New("h1client: unexpected 101 Switching Protocols")
		case resp.StatusCode >= 100 && resp.StatusCode <= 199:
			continue
		}
		return resp, nil
	}
	return nil, fmt.Errorf("h1client: more than %d informational responses", maxInterim)
}

// release ends an exchange whose response is fully read: the connection
// goes back to the pool when nothing can be left on it, else it is closed.
// stop reports false when the context's cancellation already set a past
// deadline on the connection, which would fail its next exchange.
func release(c *Client, cn *conn, stop func() bool, reusable bool) {
	if stop() && reusable && cn.br.Buffered() == 0 {
		c.put(cn)
		return
	}
	cn.nc.Close()
}

// hostPort is the address to dial for u, with HTTP's default port.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// ctxError is an I/O failure caused by the request's context ending (the
// past deadline set on the connection): it matches both the context's error
// and the I/O error.
type ctxError struct{ ctx, cause error }

func (e ctxError) Error() string   { return e.ctx.Error() + ": " + e.cause.Error() }
func (e ctxError) Unwrap() []error { return []error{e.ctx, e.cause} }
