package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"trine/gateway/internal/h1client"
	"trine/gateway/internal/httperr"
	"trine/gateway/internal/requestid"
	"trine/gateway/internal/tracing"
)

// InternalTokenHeader carries the shared credential that internal services
// require. The gateway sets it on every upstream call and never forwards a
// client's copy.
const InternalTokenHeader = "X-Trine-Internal-Token"

// DeadlineHeader tells an upstream how many milliseconds are left before the
// gateway gives up on the call, so it can stop work nobody will read.
const DeadlineHeader = "X-Trine-Deadline-Ms"

// forwardedHeaders are the only client headers sent upstream, in canonical
// form. Building the upstream header set from an allowlist means
// Authorization, cookies and any client-sent internal token can never leak
// through by accident. The trace headers are handled separately.
var forwardedHeaders = []string{"Content-Type", "Accept"}

// Canonical forms of the headers the proxy sets, worked out once for direct
// map access: Header.Set would canonicalise the same names on every call.
var (
	canonicalTraceparent   = http.CanonicalHeaderKey(tracing.Header)
	canonicalRequestID     = http.CanonicalHeaderKey(requestid.Header)
	canonicalInternalToken = http.CanonicalHeaderKey(InternalTokenHeader)
	canonicalDeadline      = http.CanonicalHeaderKey(DeadlineHeader)
)

// errFirstByte is the cause of a call cancelled because the upstream sent
// no response headers within the route's first-byte timeout.
var errFirstByte = errors.New("no response headers within the first-byte timeout")

// Idle connections kept per replica, and for how long.
const (
	maxIdlePerHost  = 64
	idleConnTimeout = 90 * time.Second
)

// Proxy relays public requests to internal services. Its clients are
// shared by all calls, so connections are pooled; it is safe for concurrent
// use.
type Proxy struct {
	// plain serves http:// replicas: it does each exchange in the
	// handler's goroutine, sparing the goroutine hand-offs of
	// http.Transport, which on a small machine cost more than the rest of
	// the relay. transport serves https:// ones.
	plain     *h1client.Client
	transport http.RoundTripper
	token     string
	log       *slog.Logger
	// observe, if set, is told about every finished upstream exchange.
	observe func(target string, outcome Outcome, d time.Duration)
}

// NewProxy returns a proxy that authenticates to upstreams with token and
// gives up connecting to a replica after connectTimeout. observe, if not
// nil, is called once per upstream exchange, for metrics.
func NewProxy(token string, connectTimeout time.Duration, log *slog.Logger,
	observe func(target string, outcome Outcome, d time.Duration)) *Proxy {
	dial := (&net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}).DialContext
	return &Proxy{
		token:   token,
		log:     log,
		observe: observe,
		plain:   h1client.New(dial, maxIdlePerHost, idleConnTimeout),
		transport: &http.Transport{
			// Internal services are addressed directly; proxy settings in
			// the environment must not reroute them.
			Proxy:                 nil,
			DialContext:           dial,
			TLSHandshakeTimeout:   5 * time.Second,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   maxIdlePerHost,
			IdleConnTimeout:       idleConnTimeout,
			ExpectContinueTimeout: time.Second,
			// Bytes are relayed as the upstream sent them.
			DisableCompression: true,
		},
	}
}

// Call describes one upstream request.
type Call struct {
	// Pool is the service to call.
	Pool *Pool
	// Method is the HTTP method sent upstream; empty means POST.
	Method string
	// Path is appended to the replica's base URL, already escaped, e.g.
	// "/rag/query" or "/collections/docs/documents/a%2Fb". It is not cleaned,
	// so an escaped "." or ".." segment stays a literal segment.
	Path string
	// Timeout bounds the whole exchange, including streaming the response.
	Timeout time.Duration
	// FirstByte bounds the wait for the response headers; zero means
	// only Timeout applies.
	FirstByte time.Duration
	// Body is sent as-is; it was read and checked before the call. Nil
	// sends no body.
	Body []byte
	// OnFirstByte, if set, learns each replica's time to response headers.
	OnFirstByte func(time.Duration)
	// Header holds extra headers of the gateway's own for this call, such
	// as X-Trine-Validate-Only; they are set after the forwarded ones.
	Header http.Header
}

// Forward sends c to a healthy replica of c.Pool and relays the answer to
// w. Replicas are chosen by Pool.Pick; another one is tried only when a
// connection could not be established, because only then is it certain
// that nothing reached the upstream. The returned error, if any, is an
// *httperr.Error ready for the client.
func (p *Proxy) Forward(w http.ResponseWriter, r *http.Request, c Call) error {
	ctx, cancel := context.WithTimeout(r.Context(), c.Timeout)
	defer cancel()
	ex, err := p.Open(ctx, r, c, nil)
	if err != nil {
		return err
	}
	if timing := TimingFrom(r.Context()); timing != nil {
		defer func() { timing.Add(time.Since(ex.Start)) }()
	}
	return ex.Relay(w, r)
}

// OpenOn is Open on one given replica, without trying any other.
func (p *Proxy) OpenOn(ctx context.Context, r *http.Request, c Call, t *Target) (*Exchange, error) {
	ex, err := p.send(ctx, r, t, c)
	if err != nil {
		return nil, classify(r.Context(), t, err)
	}
	return ex, nil
}

// Exchange is an upstream call whose response headers have arrived. Its
// owner must Relay it, read it with ReadAll, or Close it.
type Exchange struct {
	// Target is the replica that answered.
	Target *Target
	// Resp is the upstream response; its body is still unread.
	Resp *http.Response
	// Start is when the request was sent.
	Start time.Time

	p      *Proxy
	cancel context.CancelCauseFunc
	pool   *Pool
	done   bool
}

// Open sends c to a replica of c.Pool, skipping those in tried, and returns
// once response headers arrive. Like Forward it moves on to another replica
// only after a failed connection attempt. Errors are *httperr.Error values.
func (p *Proxy) Open(ctx context.Context, r *http.Request, c Call, tried []*Target) (*Exchange, error) {
	var dialErrs []error
	for {
		t := c.Pool.Pick(tried)
		if t == nil {
			break
		}
		tried = append(tried, t)
		ex, err := p.send(ctx, r, t, c)
		if err == nil {
			return ex, nil
		}
		if !isDialError(err) || ctx.Err() != nil {
			return nil, classify(r.Context(), t, err)
		}
		// Nothing reached this replica: keep traffic away from it until
		// the active checker sees it answer again.
		if t.setHealth(err) {
			p.log.WarnContext(ctx, "upstream unreachable, marked unhealthy", "upstream", t.Name, "error", err.Error())
		}
		dialErrs = append(dialErrs, fmt.Errorf("%s: %w", t.Name, err))
	}
	if len(dialErrs) > 0 {
		return nil, httperr.Unavailable("no "+c.Pool.Name+" service is reachable", time.Second, errors.Join(dialErrs...))
	}
	return nil, httperr.Unavailable("no healthy "+c.Pool.Name+" service is available", time.Second,
		fmt.Errorf("all %s replicas are unhealthy or ejected", c.Pool.Name))
}

// send makes one attempt on t. On success the exchange owns the target's
// in-flight slot until it is closed.
func (p *Proxy) send(ctx context.Context, r *http.Request, t *Target, c Call) (*Exchange, error) {
	method := c.Method
	if method == "" {
		method = http.MethodPost
	}
	var body io.Reader = http.NoBody
	if c.Body != nil {
		body = bytes.NewReader(c.Body)
	}
	callCtx, cancel := context.WithCancelCause(ctx)
	// Concatenation, not URL.JoinPath: JoinPath cleans the path, which
	// would turn a document id ".." into a request for its parent.
	req, err := http.NewRequestWithContext(callCtx, method, t.URL.String()+c.Path, body)
	if err != nil {
		cancel(err)
		return nil, err
	}
	p.setHeaders(req, r)
	for k, vs := range c.Header {
		req.Header[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	if deadline, ok := callCtx.Deadline(); ok {
		req.Header[canonicalDeadline] = []string{strconv.FormatInt(max(0, time.Until(deadline).Milliseconds()), 10)}
	}
	ex := &Exchange{Target: t, p: p, cancel: cancel, Start: time.Now(), pool: c.Pool}
	t.inFlight.Add(1)
	var firstByte *time.Timer
	if c.FirstByte > 0 {
		firstByte = time.AfterFunc(c.FirstByte, func() { cancel(errFirstByte) })
	}
	var rt http.RoundTripper = p.plain
	if req.URL.Scheme != "http" {
		rt = p.transport
	}
	resp, err := rt.RoundTrip(req)
	if firstByte != nil {
		firstByte.Stop()
	}
	if err != nil {
		if cause := context.Cause(callCtx); errors.Is(cause, errFirstByte) {
			err = fmt.Errorf("%w: %w", cause, context.DeadlineExceeded)
		}
		ex.finish(r.Context(), err)
		return nil, err
	}
	ex.Resp = resp
	if c.OnFirstByte != nil {
		c.OnFirstByte(time.Since(ex.Start))
	}
	// Checked first: the arguments would otherwise be boxed on every call
	// only to be dropped at the usual info level.
	if p.log.Enabled(ctx, slog.LevelDebug) {
		p.log.DebugContext(ctx, "upstream answered", "upstream", t.Name, "status", resp.StatusCode,
			"ttfb_ms", time.Since(ex.Start).Milliseconds())
	}
	return ex, nil
}

// setHeaders copies the allowed client headers and adds the gateway's own.
func (p *Proxy) setHeaders(req, r *http.Request) {
	for _, k := range forwardedHeaders {
		if vs := r.Header[k]; len(vs) > 0 {
			req.Header[k] = append([]string(nil), vs...)
		}
	}
	parent, ok := tracing.FromContext(r.Context())
	// Without a client trace the call starts one; its first span is the
	// call's own, so no parent span is made only to be replaced.
	call := tracing.New()
	if ok {
		call = parent.Child()
	}
	req.Header[canonicalTraceparent] = []string{call.String()}
	if ok {
		if ts := r.Header.Values("Tracestate"); len(ts) > 0 {
			req.Header["Tracestate"] = append([]string(nil), ts...)
		}
	}
	req.Header[canonicalRequestID] = []string{requestid.FromContext(r.Context())}
	req.Header[canonicalInternalToken] = []string{p.token}
	req.Header["User-Agent"] = []string{"trine-gateway"}
}

// Close abandons the exchange (a hedged loser, a fan-out failure) without a
// verdict on the target, and releases everything it holds.
func (ex *Exchange) Close() {
	if ex.Resp != nil {
		ex.Resp.Body.Close()
	}
	ex.settle(context.Background(), NoVerdict)
}

// finish records the exchange's outcome once: err == nil is a success
// unless the upstream answered with a server error; an error is a failure
// unless the client's own cancellation caused it, which says nothing about
// the target.
func (ex *Exchange) finish(clientCtx context.Context, err error) {
	outcome := Success
	switch {
	case err == nil && ex.Resp != nil && ex.Resp.StatusCode >= 500 && ex.Resp.StatusCode != http.StatusServiceUnavailable:
		// 503 is the upstream shedding load on purpose, not a fault.
		outcome = Failure
	case err == nil:
	case clientCtx.Err() != nil:
		outcome = NoVerdict
	default:
		outcome = Failure
	}
	ex.settle(clientCtx, outcome)
}

func (ex *Exchange) settle(ctx context.Context, outcome Outcome) {
	if ex.done {
		return
	}
	ex.done = true
	ex.cancel(context.Canceled)
	ex.Target.inFlight.Add(-1)
	now := time.Now()
	d := now.Sub(ex.Start)
	if ex.Target.record(outcome, ex.pool.ejection, now) {
		ex.p.log.WarnContext(ctx, "upstream ejected after consecutive failures", "upstream", ex.Target.Name,
			"for", ex.pool.ejection.For.String())
	}
	if ex.p.observe != nil {
		ex.p.observe(ex.Target.Name, outcome, d)
	}
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
