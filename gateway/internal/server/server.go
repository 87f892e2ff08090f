// Package server wires the gateway together: routes, middleware, the
// upstream pools and their health checker, and the HTTP server's lifecycle.
package server

import (
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"trine/gateway/internal/auth"
	"trine/gateway/internal/config"
	"trine/gateway/internal/httperr"
	"trine/gateway/internal/jsonbody"
	"trine/gateway/internal/metrics"
	"trine/gateway/internal/requestid"
	"trine/gateway/internal/upstream"
)

// unmatchedRoute labels requests that matched no route, keeping the metric's
// label set bounded whatever paths clients try.
const unmatchedRoute = "unmatched"

// allowProbe lists the methods tried when building an Allow header.
var allowProbe = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions,
}

// Server is the gateway's HTTP handler plus everything it depends on. Build
// it with New; it is safe for concurrent use.
type Server struct {
	cfg     *config.Config
	log     *slog.Logger
	keys    *auth.Keyring
	ml      *upstream.Pool
	sandbox *upstream.Pool
	checker *upstream.Checker
	proxy   *upstream.Proxy
	metrics *metrics.Metrics
	mux     *http.ServeMux
	// patterns holds every registered pattern, to tell a real match from
	// the mux's internal 404, 405 and redirect fallbacks.
	patterns map[string]bool
	handler  http.Handler
}

// New builds the gateway from a validated configuration. Upstreams start
// unhealthy; call CheckUpstreams (Run does) before expecting traffic to flow.
func New(cfg *config.Config, log *slog.Logger) *Server {
	s := &Server{
		cfg:      cfg,
		log:      log,
		keys:     auth.NewKeyring(cfg.Keys),
		proxy:    upstream.NewProxy(cfg.InternalToken, log),
		metrics:  metrics.New(),
		mux:      http.NewServeMux(),
		patterns: make(map[string]bool),
	}
	mlTargets := make([]*upstream.Target, len(cfg.MLURLs))
	for i, u := range cfg.MLURLs {
		mlTargets[i] = upstream.NewTarget(fmt.Sprintf("ml-%d", i), u)
	}
	sandboxTarget := upstream.NewTarget("sandbox", cfg.SandboxURL)
	s.ml = upstream.NewPool("ML", mlTargets...)
	s.sandbox = upstream.NewPool("sandbox", sandboxTarget)
	all := append(s.ml.Targets(), sandboxTarget)
	s.checker = upstream.NewChecker(all, cfg.HealthInterval, log)
	for _, t := range all {
		s.metrics.TrackUpstream(t.Name, t.Healthy)
	}

	s.handle("GET /healthz", s.healthz)
	s.handle("GET /readyz", s.readyz)
	s.route("GET /metrics", s.metrics.Handler())
	s.handle("POST /v1/rag/query", s.proxyRoute(auth.ScopeRAG, upstream.Call{
		Pool: s.ml, Path: "/rag/query", Timeout: cfg.RAGTimeout,
	}))
	s.handle("POST /v1/sandbox/run", s.proxyRoute(auth.ScopeSandbox, upstream.Call{
		Pool: s.sandbox, Path: "/run", Timeout: cfg.SandboxTimeout,
	}))

	// Outermost first: the request ID must exist before anything logs.
	s.handler = requestid.Middleware(stripInternalToken(s.observe(http.HandlerFunc(s.dispatch))))
	return s
}

// ServeHTTP handles one public request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handler.ServeHTTP(w, r)
}

// handle registers a handler that reports failure by returning an error.
func (s *Server) handle(pattern string, serve func(http.ResponseWriter, *http.Request) error) {
	s.route(pattern, httperr.Handler{Log: s.log, Serve: serve})
}

func (s *Server) route(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
	s.patterns[pattern] = true
}

// dispatch routes through the mux, but answers unmatched requests itself so
// that 404 and 405 carry the error envelope rather than the mux's plain text.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	// The mux answers an unclean path (//, /./, /../, trailing slash) with a
	// redirect, which would carry no envelope; no client of this API needs
	// one, so such paths are simply not found.
	if p := r.URL.EscapedPath(); path.Clean(p) != p {
		httperr.Write(w, r, s.log, httperr.New(http.StatusNotFound, httperr.TypeNotFound, "no such route"))
		return
	}
	_, pattern := s.mux.Handler(r)
	if !s.patterns[pattern] {
		httperr.Write(w, r, s.log, s.unmatched(r))
		return
	}
	requestInfoFrom(r.Context()).route = pattern
	s.mux.ServeHTTP(w, r)
}

// unmatched returns 405 with Allow when the path exists under other
// methods, else 404. The allowed methods are found by asking the mux, so they
// can never disagree with the registered routes.
func (s *Server) unmatched(r *http.Request) *httperr.Error {
	var allowed []string
	for _, m := range allowProbe {
		probe := r.WithContext(r.Context()) // a shallow copy is enough to change the method
		probe.Method = m
		if _, p := s.mux.Handler(probe); s.patterns[p] {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) == 0 {
		return httperr.New(http.StatusNotFound, httperr.TypeNotFound, "no such route")
	}
	return httperr.New(http.StatusMethodNotAllowed, httperr.TypeMethodNotAllowed,
		"method "+r.Method+" is not allowed on this route").
		WithHeader("Allow", strings.Join(allowed, ", "))
}

// proxyRoute returns the handler of an authenticated JSON route relayed to
// an upstream: check the key's scope, check the body, forward it as-is.
func (s *Server) proxyRoute(scope string, call upstream.Call) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		key, err := s.keys.Authorize(r, scope)
		if key.ID != "" {
			requestInfoFrom(r.Context()).keyID = key.ID
		}
		if err != nil {
			return err
		}
		body, err := jsonbody.Read(w, r, s.cfg.MaxBodyBytes)
		if err != nil {
			return err
		}
		c := call
		c.Body = body
		return s.proxy.Forward(w, r, c)
	}
}

// drainTimeout bounds a graceful shutdown. Every request is bounded by its
// route's timeout, so waiting a little longer than the longest lets all
// in-flight requests finish.
func (s *Server) drainTimeout() time.Duration {
	return max(s.cfg.RAGTimeout, s.cfg.SandboxTimeout) + 5*time.Second
}
