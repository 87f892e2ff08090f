package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"trine/gateway/internal/auth"
	"trine/gateway/internal/config"
	"trine/gateway/internal/ratelimit"
	"trine/gateway/internal/requestid"
	"trine/gateway/internal/server"
)

const (
	internalToken = "test-internal-token-0123456789"
	fullKey       = "full-access-key"
	ragOnlyKey    = "rag-only-key"
	// noSecretKey has the jobs scope but no webhook secret.
	noSecretKey = "jobs-without-webhook-secret-key"
)

// webhookSecret is the full key's webhook signing key.
var webhookSecret = []byte("test-webhook-secret-0123456789ab")

// seen is one request as a fake upstream received it.
type seen struct {
	Method string
	Path   string
	// RawPath is the path as sent, escapes included.
	RawPath string
	Header  http.Header
	Body    string
}

// fake is an internal service stand-in: /healthz answers with a settable
// status, every other path goes to handler, and all requests are recorded.
type fake struct {
	*httptest.Server
	health atomic.Int32

	mu       sync.Mutex // guards requests
	requests []seen
}

func newFake(t *testing.T, handler http.HandlerFunc) *fake {
	t.Helper()
	f := &fake{}
	f.health.Store(http.StatusOK)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.WriteHeader(int(f.health.Load()))
			return
		}
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.requests = append(f.requests, seen{Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(), Header: r.Header.Clone(), Body: string(body)})
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body)) // the handler may read it too
		handler(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fake) seen() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.requests...)
}

// echo answers 200 with a JSON body naming the replica.
func echo(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"replica":"`+name+`"}`)
	}
}

// syncBuffer collects log output written from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type harness struct {
	cfg     *config.Config
	gw      *gateway
	srv     *server.Server
	ml      []*fake
	sandbox *fake
	logs    *syncBuffer
}

type options struct {
	ml         []http.HandlerFunc
	sandbox    http.HandlerFunc
	ragTimeout time.Duration
	maxBody    int64
	// keysFile is where ReloadKeys reads keys from.
	keysFile string
	// upstream, when set, adjusts upstream timeouts and policies.
	upstream func(*config.Upstream)
	// limits, when set, adjusts the rate and concurrency limits.
	limits func(*config.Limits)
	// jobs, when set, adjusts the job queue settings.
	jobs func(*config.Jobs)
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func testConfig(t *testing.T, o options, mlURLs []*url.URL, sandboxURL *url.URL) *config.Config {
	t.Helper()
	hash := func(k string) [32]byte { return sha256.Sum256([]byte(k)) }
	cfg := &config.Config{
		Addr:          "127.0.0.1:0",
		MLURLs:        mlURLs,
		SandboxURL:    sandboxURL,
		InternalToken: internalToken,
		Keys: []auth.Key{
			{ID: "full", Hash: hash(fullKey), Scopes: []string{"rag", "ingest", "sandbox", "jobs", "admin"},
				WebhookSecret: webhookSecret},
			{ID: "rag-only", Hash: hash(ragOnlyKey), Scopes: []string{"rag"}},
			{ID: "no-secret", Hash: hash(noSecretKey), Scopes: []string{"jobs"}},
		},
		MaxBodyBytes:   1 << 20,
		RAGTimeout:     5 * time.Second,
		SandboxTimeout: 5 * time.Second,
		// Tests drive health checks themselves with CheckUpstreams.
		HealthInterval: time.Hour,
		LogLevel:       slog.LevelDebug,
		Limits: config.Limits{
			Default:     ratelimit.Rule{Rate: 1000, Burst: 1000},
			MaxInFlight: 100,
			FailureMode: ratelimit.FailOpen,
		},
		Upstream: config.Upstream{
			ConnectTimeout:          time.Second,
			RAGFirstByteTimeout:     5 * time.Second,
			SandboxFirstByteTimeout: 5 * time.Second,
			EjectAfter:              3,
			EjectFor:                time.Minute,
			HedgeMinDelay:           20 * time.Millisecond,
		},
		Jobs: config.Jobs{
			Backend:               config.JobsBackendSQLite,
			SQLitePath:            filepath.Join(t.TempDir(), "jobs.sqlite3"),
			MaxAttempts:           3,
			WebhookInitialBackoff: time.Millisecond,
			WebhookMaxBackoff:     10 * time.Millisecond,
			WebhookRetryWindow:    time.Hour,
		},
	}
	cfg.KeysFile = o.keysFile
	if o.upstream != nil {
		o.upstream(&cfg.Upstream)
	}
	if o.limits != nil {
		o.limits(&cfg.Limits)
	}
	if o.jobs != nil {
		o.jobs(&cfg.Jobs)
	}
	if o.ragTimeout > 0 {
		cfg.RAGTimeout = o.ragTimeout
	}
	if o.maxBody > 0 {
		cfg.MaxBodyBytes = o.maxBody
	}
	return cfg
}

// newHarness starts fake upstreams and a gateway in front of them, and runs
// one round of health checks so that healthy fakes receive traffic.
func newHarness(t *testing.T, o options) *harness {
	t.Helper()
	if len(o.ml) == 0 {
		o.ml = []http.HandlerFunc{echo("ml-0")}
	}
	if o.sandbox == nil {
		o.sandbox = echo("sandbox")
	}
	h := &harness{logs: &syncBuffer{}}
	var mlURLs []*url.URL
	for _, handler := range o.ml {
		f := newFake(t, handler)
		h.ml = append(h.ml, f)
		mlURLs = append(mlURLs, mustURL(t, f.URL))
	}
	h.sandbox = newFake(t, o.sandbox)
	cfg := testConfig(t, o, mlURLs, mustURL(t, h.sandbox.URL))
	log := slog.New(requestid.NewLogHandler(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	h.cfg = cfg
	h.srv = newServer(t, cfg, log)
	h.srv.CheckUpstreams(context.Background())
	h.gw = servePlain(t, h.srv)
	return h
}

// newServer builds a gateway and closes it when the test ends.
func newServer(t *testing.T, cfg *config.Config, log *slog.Logger) *server.Server {
	t.Helper()
	srv, err := server.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// req describes a client request to the gateway.
type req struct {
	method string
	path   string
	body   string
	key    string
	header map[string]string
}

func (h *harness) do(t *testing.T, q req) *http.Response {
	t.Helper()
	resp, err := h.gw.Client().Do(h.newRequest(t, context.Background(), q))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (h *harness) newRequest(t *testing.T, ctx context.Context, q req) *http.Request {
	t.Helper()
	if q.method == "" {
		q.method = http.MethodPost
	}
	var body io.Reader
	if q.body != "" {
		body = strings.NewReader(q.body)
	}
	r, err := http.NewRequestWithContext(ctx, q.method, h.gw.URL+q.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if q.body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if q.key != "" {
		r.Header.Set("Authorization", "Bearer "+q.key)
	}
	for k, v := range q.header {
		r.Header.Set(k, v)
	}
	return r
}

// rag is a valid RAG query from a fully authorised client.
func rag() req {
	return req{path: "/v1/rag/query", key: fullKey, body: `{"query":"q","documents":["a"]}`}
}

type envelope struct {
	Error struct {
		Type      string `json:"type"`
		Message   string `json:"message"`
		RequestID string `json:"request_id"`
	} `json:"error"`
}

// readEnvelope checks that the body is exactly the error envelope, with no
// other fields, and that its request ID matches the response header.
func readEnvelope(t *testing.T, resp *http.Response) envelope {
	t.Helper()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var shape map[string]map[string]any
	if err := json.Unmarshal(raw, &shape); err != nil || len(shape) != 1 || len(shape["error"]) != 3 {
		t.Fatalf("body is not the error envelope: %s", raw)
	}
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	if env.Error.Type == "" || env.Error.Message == "" {
		t.Errorf("envelope has empty type or message: %s", raw)
	}
	if got := resp.Header.Get("X-Request-ID"); env.Error.RequestID != got || got == "" {
		t.Errorf("envelope request_id %q, header X-Request-ID %q", env.Error.RequestID, got)
	}
	return env
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitFor polls cond until it holds or a few seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gateway is a running gateway's address and a client for it.
type gateway struct {
	URL    string
	client *http.Client
}

func (g *gateway) Client() *http.Client { return g.client }

// servePlain serves srv on a loopback port with the plain-HTTP server that
// Run uses, until the test ends.
func servePlain(t *testing.T, srv *server.Server) *gateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	plain := srv.PlainServer()
	go func() { _ = plain.Serve(ln) }()
	transport := &http.Transport{}
	t.Cleanup(func() {
		transport.CloseIdleConnections()
		plain.Close()
	})
	return &gateway{URL: "http://" + ln.Addr().String(), client: &http.Client{Transport: transport}}
}
