package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"trine/gateway/internal/h1server"
	"trine/gateway/internal/httperr"
	"trine/gateway/internal/requestid"
)

// Timeouts of the public HTTP server. There is deliberately no WriteTimeout:
// responses are bounded by each route's upstream timeout instead, and a
// shorter server-wide limit would cut off long streams.
const (
	// ReadHeaderTimeout cuts off clients that are slow to send headers.
	ReadHeaderTimeout = 10 * time.Second
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout = 30 * time.Second
	// IdleTimeout closes keep-alive connections left unused.
	IdleTimeout = 120 * time.Second
)

// httpServer is what Run needs of an HTTP server once it serves.
type httpServer interface {
	Shutdown(ctx context.Context) error
	Close() error
}

// PlainServer returns the server for plain-HTTP connections, with the
// gateway's timeouts, and with requests it cannot read refused in the
// error envelope. TLS connections, which may speak HTTP/2, are served by
// net/http instead.
func (s *Server) PlainServer() *h1server.Server {
	return &h1server.Server{
		Handler:           s,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		IdleTimeout:       IdleTimeout,
		Reject:            s.reject,
		Log:               s.log,
	}
}

// reject answers a request the HTTP server could not read, in the envelope.
func (s *Server) reject(w http.ResponseWriter, status int, msg string) {
	id := requestid.New()
	w.Header().Set(requestid.Header, id)
	r := (&http.Request{Header: http.Header{}}).WithContext(requestid.WithID(context.Background(), id))
	httperr.Write(w, r, s.log, httperr.New(status, httperr.TypeInvalidRequest, msg))
}

// CheckUpstreams runs one round of health checks on every upstream.
func (s *Server) CheckUpstreams(ctx context.Context) {
	s.checker.CheckAll(ctx)
}

// Run serves on ln until ctx is cancelled, then stops accepting connections
// and waits for in-flight requests to finish. It checks upstream health once
// before serving, so the first requests are routed on real information, and
// keeps checking in the background. It returns nil after a clean drain.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	defer s.Close()
	// The job loops stop only after the drain, so that callbacks accepted
	// during it still get their webhooks started.
	jobsCtx, stopJobs := context.WithCancel(context.WithoutCancel(ctx))
	jobsDone := make(chan struct{})
	go func() { s.RunJobs(jobsCtx); close(jobsDone) }()
	defer func() { stopJobs(); <-jobsDone }()
	s.CheckUpstreams(ctx)
	checkCtx, stopChecks := context.WithCancel(ctx)
	defer stopChecks()
	go s.checker.Run(checkCtx)

	served := make(chan error, 1)
	var srv httpServer
	if s.cfg.TLS.CertFile != "" {
		tlsSrv := &http.Server{
			Handler:           s,
			ReadHeaderTimeout: ReadHeaderTimeout,
			ReadTimeout:       ReadTimeout,
			IdleTimeout:       IdleTimeout,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
			TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12},
		}
		srv = tlsSrv
		go func() { served <- tlsSrv.ServeTLS(ln, s.cfg.TLS.CertFile, s.cfg.TLS.KeyFile) }()
	} else {
		plain := s.PlainServer()
		srv = plain
		go func() { served <- plain.Serve(ln) }()
	}
	s.log.Info("listening", "addr", ln.Addr().String(), "tls", s.cfg.TLS.CertFile != "")

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down: draining in-flight requests", "max_wait", s.drainTimeout().String())
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.drainTimeout())
	defer cancel()
	if err := srv.Shutdown(drainCtx); err != nil {
		// Closing the stragglers' connections cancels their request
		// contexts and so their upstream calls.
		_ = srv.Close()
		return fmt.Errorf("drain: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	s.log.Info("stopped")
	return nil
}
