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
	"time"

	"trine/gateway/internal/httperr"
	"trine/gateway/internal/requestid"
)

// InternalTokenHeader carries the shared credential that internal services
// require. The gateway sets it on every upstream call and never forwards a
// client's copy.
const InternalTokenHeader = "X-Trine-Internal-Token"

// ConnectTimeout bounds establishing a connection to one replica, so that a
// dead replica costs little before the next one is tried.
const ConnectTimeout = 2 * time.Second

// forwardedHeaders are the only client headers sent upstream. Building the
// upstream header set from an allowlist means Authorization, cookies and any
// client-sent internal token can never leak through by accident.
var forwardedHeaders = []string{"Content-Type", "Accept", "Traceparent", "Tracestate"}

// Proxy relays public requests to internal services. It holds one transport
// shared by all calls, so connections are pooled; it is safe for concurrent
// use.
type Proxy struct {
	transport http.RoundTripper
	token     string
	log       *slog.Logger
}

// NewProxy returns a proxy that authenticates to upstreams with token.
func NewProxy(token string, log *slog.Logger) *Proxy {
	return &Proxy{
		token: token,
		log:   log,
		transport: &http.Transport{
			// Internal services are addressed directly; proxy settings in
			// the environment must not reroute them.
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   5 * time.Second,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
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
	// Path is appended to the replica's base URL, e.g. "/rag/query".
	Path string
	// Timeout bounds the whole exchange, including streaming the response.
	Timeout time.Duration
	// Body is sent as-is; it was read and checked before the call.
	Body []byte
}

// Forward POSTs c.Body to a healthy replica of c.Pool and relays the answer
// to w. Replicas are tried in round-robin order; the next one is tried only
// when a connection could not be established, because only then is it
// certain that nothing reached the upstream. The returned error, if any, is
// an *httperr.Error ready for the client.
func (p *Proxy) Forward(w http.ResponseWriter, r *http.Request, c Call) error {
	ctx, cancel := context.WithTimeout(r.Context(), c.Timeout)
	defer cancel()

	candidates := c.Pool.candidates()
	if len(candidates) == 0 {
		return httperr.Unavailable("no healthy "+c.Pool.Name+" service is available", time.Second,
			fmt.Errorf("all %s replicas are unhealthy", c.Pool.Name))
	}
	var dialErrs []error
	for _, t := range candidates {
		start := time.Now()
		resp, err := p.send(ctx, r, t, c)
		if err == nil {
			p.log.DebugContext(ctx, "upstream answered", "upstream", t.Name, "status", resp.StatusCode,
				"ttfb_ms", time.Since(start).Milliseconds())
			return p.relay(ctx, w, r, t, resp)
		}
		if !isDialError(err) || ctx.Err() != nil {
			return classify(r.Context(), t, err)
		}
		// Passive health check: keep traffic away until the active
		// checker sees the replica answer again.
		if t.setHealth(err) {
			p.log.WarnContext(ctx, "upstream unreachable, marked unhealthy", "upstream", t.Name, "error", err.Error())
		}
		dialErrs = append(dialErrs, fmt.Errorf("%s: %w", t.Name, err))
	}
	return httperr.Unavailable("no "+c.Pool.Name+" service is reachable", time.Second, errors.Join(dialErrs...))
}

func (p *Proxy) send(ctx context.Context, r *http.Request, t *Target, c Call) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL.JoinPath(c.Path).String(), bytes.NewReader(c.Body))
	if err != nil {
		return nil, err
	}
	for _, k := range forwardedHeaders {
		if vs := r.Header.Values(k); len(vs) > 0 {
			req.Header[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
		}
	}
	req.Header.Set(requestid.Header, requestid.FromContext(r.Context()))
	req.Header.Set(InternalTokenHeader, p.token)
	req.Header.Set("User-Agent", "trine-gateway")
	return p.transport.RoundTrip(req)
}

// relay sends a 2xx answer to the client as it arrives, flushing after every
// read so that event streams reach the client frame by frame. Any other
// answer becomes an error for the client.
func (p *Proxy) relay(ctx context.Context, w http.ResponseWriter, r *http.Request, t *Target, resp *http.Response) error {
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return upstreamFailure(t, resp)
	}
	h := w.Header()
	for _, k := range []string{"Content-Type", "Cache-Control"} {
		if v := resp.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, readErr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return httperr.ClientClosed(err)
			}
			// Not every writer can flush (ErrNotSupported); the data then
			// goes out when the handler returns, which is still correct.
			_ = rc.Flush()
		}
		if readErr == io.EOF {
			return nil
		}
		if readErr != nil {
			he := classify(r.Context(), t, readErr)
			if he.Code == httperr.StatusClientClosedRequest {
				return he
			}
			// The status line is gone, so no error envelope can follow.
			// Aborting the connection tells the client the body is
			// incomplete instead of letting it pass as a whole answer.
			p.log.WarnContext(ctx, "upstream failed mid-response, aborting", "upstream", t.Name,
				"status", he.Code, "type", he.Type, "cause", readErr.Error())
			panic(http.ErrAbortHandler)
		}
	}
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
