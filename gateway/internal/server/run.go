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

	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		IdleTimeout:       IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	if s.cfg.TLS.CertFile != "" {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		go func() { served <- srv.ServeTLS(ln, s.cfg.TLS.CertFile, s.cfg.TLS.KeyFile) }()
	} else {
		go func() { served <- srv.Serve(ln) }()
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
