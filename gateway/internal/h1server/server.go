// Package h1server serves HTTP/1.1 on plain connections, running each
// request's handler in its connection's goroutine.
//
// net/http's server starts a goroutine for every request whose body has
// been read, to notice a client that goes away, and stops it again when the
// handler returns: a new goroutine, a read that parks, a deadline that wakes
// it and a hand-back to the connection's goroutine. On a small machine those
// wake-ups cost more per relayed request than the rest of the server. This
// server watches a connection only once its request has outlived a sweep of
// the busy connections (WatchAfter), which a relayed request rarely does, so
// a fast request wakes nothing but its own goroutine. A client that leaves
// during a longer request still cancels its context, within two sweeps.
//
// Parsing is net/http's own (ReadRequest), so request framing (lengths,
// chunked bodies, pipelining) is the standard library's. Responses are
// framed as net/http frames them: a declared Content-Length, a length worked
// out when the handler returns before flushing a short body, chunked
// encoding otherwise.
package h1server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// WatchAfter is the interval between sweeps of the busy connections: a
// request still running at two sweeps in a row gets a watcher that cancels
// its context if the client goes away.
const WatchAfter = 10 * time.Millisecond

// Server serves HTTP/1.1 with Handler. Set its fields before Serve; it is
// safe for concurrent use afterwards.
type Server struct {
	// Handler serves every request.
	Handler http.Handler
	// ReadHeaderTimeout bounds reading a request's headers, ReadTimeout
	// reading the whole request, IdleTimeout the wait for the next request
	// on a kept-alive connection. Zero means no limit.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration
	// MaxHeaderBytes caps the request line and headers; zero means
	// http.DefaultMaxHeaderBytes, as in net/http.
	MaxHeaderBytes int
	// Reject writes the answer to a request that could not be served
	// (malformed, headers too large, an unsupported version or
	// expectation). Nil sends the status text as plain text.
	Reject func(w http.ResponseWriter, status int, msg string)
	// Log receives handler panics and failed accepts; nil means
	// slog.Default().
	Log *slog.Logger

	once    sync.Once
	closing atomic.Bool // set by Shutdown and Close
	closed  atomic.Bool // set by Close: requests are cancelled

	mu        sync.Mutex // guards the fields below
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	sweeping  bool
}

func (s *Server) init() {
	s.once.Do(func() {
		s.listeners = make(map[net.Listener]struct{})
		s.conns = make(map[*conn]struct{})
	})
}

// Serve accepts connections on ln and serves them until ln fails or the
// server is shut down, when it returns http.ErrServerClosed. ln is closed
// when Serve returns.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	defer ln.Close()
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			// Running out of file descriptors passes; net/http waits it
			// out the same way rather than stop serving.
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logger().Warn("accept failed, retrying", "error", err.Error(), "retry_in", backoff.String())
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := newConn(s, nc)
		if !s.track(c) {
			nc.Close()
			return http.ErrServerClosed
		}
		go c.serve()
	}
}

// isTemporary reports errors that net/http's accept loop also retries.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// track registers c, starting the sweeper with the first connection; it
// reports false once the server is shutting down.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	if !s.sweeping {
		s.sweeping = true
		go s.sweep()
	}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// sweep runs while connections are open: each tick, a connection whose
// request was already running at the previous tick gets a watcher.
func (s *Server) sweep() {
	t := time.NewTicker(WatchAfter)
	defer t.Stop()
	for range t.C {
		s.mu.Lock()
		if len(s.conns) == 0 {
			s.sweeping = false
			s.mu.Unlock()
			return
		}
		for c := range s.conns {
			c.sweep()
		}
		s.mu.Unlock()
	}
}

// shutdownPoll is the first interval between checks for idle connections
// during Shutdown; it doubles up to shutdownPollMax.
const (
	shutdownPoll    = time.Millisecond
	shutdownPollMax = 500 * time.Millisecond
)

// Shutdown stops accepting connections, closes idle ones, and waits for
// the others to finish their request, closing each as it does. It returns
// ctx's error if ctx ends first; Close then ends the stragglers.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.closing.Store(true)
	s.closeListeners()
	wait := shutdownPoll
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		if s.closeIdle() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			wait = min(2*wait, shutdownPollMax)
			timer.Reset(wait)
		}
	}
}

// Close stops accepting connections, closes every connection and cancels
// every request in progress.
func (s *Server) Close() error {
	s.init()
	s.closed.Store(true)
	s.closing.Store(true)
	s.closeListeners()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.mu.Lock()
		if c.cancel != nil {
			c.cancel(http.ErrServerClosed)
		}
		c.mu.Unlock()
		c.nc.Close()
	}
	return nil
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ln := range s.listeners {
		ln.Close()
	}
}

// closeIdle closes the connections waiting for a request and reports
// whether none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.idle.Load() {
			c.nc.Close()
		}
	}
	return len(s.conns) == 0
}

func (s *Server) maxHeaderBytes() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes
	}
	return http.DefaultMaxHeaderBytes
}

// headerDeadline is when a request begun at start must have sent its
// headers: ReadHeaderTimeout, else ReadTimeout, else never.
func (s *Server) headerDeadline(start time.Time) time.Time {
	switch {
	case s.ReadHeaderTimeout > 0:
		return start.Add(s.ReadHeaderTimeout)
	case s.ReadTimeout > 0:
		return start.Add(s.ReadTimeout)
	}
	return time.Time{}
}
