// Package server wires the gateway together: routes, middleware, the
// upstream pools and their health checker, and the HTTP server's lifecycle.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"trine/gateway/internal/auth"
	"trine/gateway/internal/config"
	"trine/gateway/internal/fanout"
	"trine/gateway/internal/httperr"
	"trine/gateway/internal/jobs"
	"trine/gateway/internal/jsonbody"
	"trine/gateway/internal/metrics"
	"trine/gateway/internal/ratelimit"
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
	keys    *auth.Store
	ml      *upstream.Pool
	sandbox *upstream.Pool
	checker *upstream.Checker
	proxy   *upstream.Proxy
	fanout  *fanout.Runner
	metrics *metrics.Metrics
	// limiter and inFlight enforce per-key limits; closeLimiter releases
	// the limiter's connections.
	limiter      ratelimit.Limiter
	closeLimiter func() error
	inFlight     *ratelimit.InFlight
	// jobs is the job queue; jobRunner delivers its webhooks and reaps
	// its expired leases; jobsPolicy says which webhook URLs are allowed.
	jobs       jobs.Store
	jobRunner  *jobs.Runner
	jobsPolicy jobs.URLPolicy
	// ensureJobsGroup, when set, creates the Redis consumer group.
	ensureJobsGroup func(context.Context) error
	closeOnce       sync.Once // guards closeErr
	closeErr        error
	mux             *http.ServeMux
	// patterns holds every registered pattern, to tell a real match from
	// the mux's internal 404, 405 and redirect fallbacks.
	patterns map[string]bool
	handler  http.Handler
}

// New builds the gateway from a validated configuration and opens the job
// queue. Upstreams start unhealthy; call CheckUpstreams (Run does) before
// expecting traffic to flow. Run, or else Close, releases what New opened.
func New(cfg *config.Config, log *slog.Logger) (*Server, error) {
	s := &Server{
		cfg:      cfg,
		log:      log,
		keys:     auth.NewStore(cfg.KeysFile, cfg.Keys),
		metrics:  metrics.New(),
		mux:      http.NewServeMux(),
		patterns: make(map[string]bool),
		inFlight: ratelimit.NewInFlight(),
	}
	if err := s.openJobs(context.Background()); err != nil {
		return nil, err
	}
	s.limiter, s.closeLimiter = s.newLimiter(cfg.Limits)
	s.proxy = upstream.NewProxy(cfg.InternalToken, cfg.Upstream.ConnectTimeout, log,
		func(target string, o upstream.Outcome, d time.Duration) {
			s.metrics.UpstreamDone(target, o.String(), d)
		})
	mlTargets := make([]*upstream.Target, len(cfg.MLURLs))
	for i, u := range cfg.MLURLs {
		mlTargets[i] = upstream.NewTarget(fmt.Sprintf("ml-%d", i), u)
	}
	sandboxTarget := upstream.NewTarget("sandbox", cfg.SandboxURL)
	ejection := upstream.Ejection{After: cfg.Upstream.EjectAfter, For: cfg.Upstream.EjectFor}
	s.ml = upstream.NewPool("ML", ejection, mlTargets...)
	s.sandbox = upstream.NewPool("sandbox", ejection, sandboxTarget)
	s.fanout = &fanout.Runner{Proxy: s.proxy, Pool: s.ml, Latencies: &fanout.Latencies{},
		HedgeDelay: cfg.Upstream.HedgeDelay, MinHedgeDelay: cfg.Upstream.HedgeMinDelay}
	all := append(s.ml.Targets(), sandboxTarget)
	s.checker = upstream.NewChecker(all, cfg.HealthInterval, log)
	for _, t := range all {
		s.metrics.TrackUpstream(t.Name, t.Healthy, func() bool { return t.Status().Ejected }, t.InFlight)
	}

	s.handle("GET /healthz", s.healthz)
	s.handle("GET /readyz", s.readyz)
	s.route("GET /metrics", s.metrics.Handler())
	s.handle("POST /v1/rag/query", s.proxyRoute(proxySpec{
		scope: auth.ScopeRAG, pool: s.ml, path: fixedPath("/rag/query"), readBody: true,
		timeout: cfg.RAGTimeout, firstByte: cfg.Upstream.RAGFirstByteTimeout,
		forward: s.forwardRAG, onFirstByte: s.fanout.Latencies.Observe,
	}))
	s.handle("POST /v1/sandbox/run", s.proxyRoute(proxySpec{
		scope: auth.ScopeSandbox, pool: s.sandbox, path: fixedPath("/run"), readBody: true,
		timeout: cfg.SandboxTimeout, firstByte: cfg.Upstream.SandboxFirstByteTimeout,
	}))
	s.registerCollections()
	s.registerJobs()

	for pattern := range cfg.Limits.Routes {
		s.warnUnknownRoute(pattern, "route_limits")
	}
	for pattern := range cfg.Limits.RouteMaxBody {
		s.warnUnknownRoute(pattern, "route_max_body_bytes")
	}

	// Outermost first: the request ID must exist before anything logs.
	s.handler = requestid.Middleware(stripInternalToken(s.observe(http.HandlerFunc(s.dispatch))))
	return s, nil
}

// ReloadKeys re-reads the keys file. Requests in flight keep the keys they
// were authorised with; an invalid file keeps the old keys and is logged.
func (s *Server) ReloadKeys(ctx context.Context) error {
	n, err := s.keys.Reload()
	if err != nil {
		s.log.ErrorContext(ctx, "keys file not reloaded, keeping the previous keys", "keys", n, "error", err.Error())
		return err
	}
	s.log.InfoContext(ctx, "keys file reloaded", "keys", n)
	return nil
}

// warnUnknownRoute flags a per-route setting that names no route, which
// would otherwise silently never apply.
func (s *Server) warnUnknownRoute(pattern, setting string) {
	if !s.patterns[pattern] {
		s.log.Warn("setting names no route; use a pattern such as \"POST /v1/rag/query\"",
			"setting", setting, "pattern", pattern)
	}
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

// proxySpec describes an authenticated route relayed to an upstream.
type proxySpec struct {
	scope string
	pool  *upstream.Pool
	// method is sent upstream; empty means POST.
	method string
	// timeout bounds the whole call; firstByte the wait for its headers.
	timeout, firstByte time.Duration
	// readBody makes the route take a JSON object body, checked and sent
	// upstream as-is; routes without it send no body.
	readBody bool
	// forward sends the call; nil means Proxy.Forward.
	forward func(http.ResponseWriter, *http.Request, upstream.Call) error
	// onFirstByte, if set, learns upstream times to first byte.
	onFirstByte func(time.Duration)
	// path builds the escaped upstream path from the request, or returns
	// the client's error for invalid path parameters.
	path func(*http.Request) (string, error)
}

// proxyRoute returns the handler of an authenticated route relayed to an
// upstream: check the key's scope, the path and the body, forward as-is.
func (s *Server) proxyRoute(spec proxySpec) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		_, release, err := s.authorize(w, r, spec.scope)
		if err != nil {
			return err
		}
		defer release()
		info := requestInfoFrom(r.Context())
		p, err := spec.path(r)
		if err != nil {
			return err
		}
		c := upstream.Call{Pool: spec.pool, Method: spec.method, Path: p, Timeout: spec.timeout,
			FirstByte: spec.firstByte, OnFirstByte: spec.onFirstByte}
		if spec.readBody {
			if c.Body, err = jsonbody.Read(w, r, s.bodyLimit(info.route)); err != nil {
				return err
			}
		}
		if spec.forward != nil {
			return spec.forward(w, r, c)
		}
		return s.proxy.Forward(w, r, c)
	}
}

// authorize checks the request's API key and scope and applies the key's
// limits. A known key is limited even when it lacks the scope, so that
// probing routes costs the same as using them. On success the caller must
// call release when the request is done.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, scope string) (key auth.Key, release func(), err error) {
	key, err = s.keys.Authorize(r, scope)
	release = func() {}
	if key.ID != "" {
		info := requestInfoFrom(r.Context())
		info.keyID = key.ID
		rel, limitErr := s.admit(w, r, key, info.route)
		if limitErr != nil {
			return auth.Key{}, release, limitErr
		}
		release = rel
	}
	if err != nil {
		release()
		return auth.Key{}, func() {}, err
	}
	return key, release, nil
}

// forwardRAG sends a RAG query as its "fanout" field asks.
func (s *Server) forwardRAG(w http.ResponseWriter, r *http.Request, c upstream.Call) error {
	mode, err := fanout.ParseMode(c.Body)
	if err != nil {
		return err
	}
	switch mode {
	case fanout.All:
		return s.fanout.All(w, r, c)
	case fanout.Hedge:
		return s.fanout.Hedge(w, r, c)
	default:
		return s.proxy.Forward(w, r, c)
	}
}

// bodyLimit is the request body cap of a route: its own if configured,
// else the gateway-wide one.
func (s *Server) bodyLimit(route string) int64 {
	if n, ok := s.cfg.Limits.RouteMaxBody[route]; ok {
		return n
	}
	return s.cfg.MaxBodyBytes
}

// drainTimeout bounds a graceful shutdown. Every request is bounded by its
// route's timeout, so waiting a little longer than the longest lets all
// in-flight requests finish.
func (s *Server) drainTimeout() time.Duration {
	return max(s.cfg.RAGTimeout, s.cfg.SandboxTimeout) + 5*time.Second
}
