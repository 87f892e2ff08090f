package server_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestLoadIsSpread(t *testing.T) {
	h := newHarness(t, options{ml: []http.HandlerFunc{echo("ml-0"), echo("ml-1"), echo("ml-2")}})
	for range 60 {
		if resp := h.do(t, rag()); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	for i, f := range h.ml {
		if n := len(f.seen()); n < 5 {
			t.Errorf("ml-%d got only %d of 60 requests", i, n)
		}
	}
}

func TestBusyReplicaAvoided(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	busy := func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		echo("ml-0")(w, r)
	}
	h := newHarness(t, options{ml: []http.HandlerFunc{busy, echo("ml-1")}})
	defer close(release)
	// Requests go to ml-1 while ml-0 holds one, however the draw falls.
	for range 20 {
		if len(h.ml[0].seen()) > 0 {
			break
		}
		go func() {
			resp, err := h.gw.Client().Do(h.newRequest(t, context.Background(), rag()))
			if err == nil {
				resp.Body.Close()
			}
		}()
		select {
		case <-arrived:
		case <-time.After(100 * time.Millisecond):
		}
	}
	if len(h.ml[0].seen()) != 1 {
		t.Fatalf("ml-0 saw %d requests", len(h.ml[0].seen()))
	}
	before := len(h.ml[1].seen())
	for range 10 {
		if body := body(t, h.do(t, rag())); body != `{"replica":"ml-1"}` {
			t.Fatalf("answer %s while ml-0 was busy", body)
		}
	}
	if len(h.ml[1].seen()) != before+10 {
		t.Error("requests did not all go to the idle replica")
	}
}

func TestUnhealthyReplicaSkipped(t *testing.T) {
	h := newHarness(t, options{ml: []http.HandlerFunc{echo("ml-0"), echo("ml-1"), echo("ml-2")}})
	h.ml[1].health.Store(http.StatusInternalServerError)
	h.srv.CheckUpstreams(context.Background())
	for range 10 {
		if resp := h.do(t, rag()); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if n := len(h.ml[1].seen()); n != 0 {
		t.Errorf("unhealthy ml-1 got %d requests", n)
	}

	// Recovery is noticed by the next check.
	h.ml[1].health.Store(http.StatusOK)
	h.srv.CheckUpstreams(context.Background())
	for i := 0; len(h.ml[1].seen()) == 0; i++ {
		if i == 100 {
			t.Fatal("recovered ml-1 got no request in 100")
		}
		h.do(t, rag())
	}
}

func TestConnectionRefusedTriesNextReplica(t *testing.T) {
	h := newHarness(t, options{ml: []http.HandlerFunc{echo("ml-0"), echo("ml-1")}})
	// ml-0 passed its health check and then died: connecting to it fails,
	// so nothing was sent and the next replica may be tried.
	h.ml[0].Close()
	// Replicas are drawn at random: in 20 requests ml-0 is tried first
	// at least once (all but certainly), and every request still succeeds.
	for i := range 20 {
		resp := h.do(t, rag())
		if got := body(t, resp); resp.StatusCode != 200 || got != `{"replica":"ml-1"}` {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, got)
		}
	}
	if n := len(h.ml[1].seen()); n != 20 {
		t.Errorf("ml-1 got %d requests, want 20", n)
	}
	readyz := body(t, h.do(t, req{method: "GET", path: "/readyz"}))
	if !strings.Contains(readyz, `"name":"ml-0","url":"`+h.ml[0].URL+`","healthy":false`) {
		t.Errorf("ml-0 not marked unhealthy after a refused connection: %s", readyz)
	}
}

func TestNoHealthyReplica(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *harness)
		q     req
	}{
		{"ML health checks fail", func(h *harness) {
			h.ml[0].health.Store(503)
			h.ml[1].health.Store(500)
			h.srv.CheckUpstreams(context.Background())
		}, rag()},
		{"all ML replicas refuse connections", func(h *harness) {
			h.ml[0].Close()
			h.ml[1].Close()
		}, rag()},
		{"sandbox health check fails", func(h *harness) {
			h.sandbox.health.Store(500)
			h.srv.CheckUpstreams(context.Background())
		}, req{path: "/v1/sandbox/run", key: fullKey, body: `{}`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, options{ml: []http.HandlerFunc{echo("ml-0"), echo("ml-1")}})
			tc.setup(h)
			resp := h.do(t, tc.q)
			if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" {
				t.Errorf("status %d Retry-After %q, want 503 and 1", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
			if env := readEnvelope(t, resp); env.Error.Type != "unavailable" {
				t.Errorf("type %q", env.Error.Type)
			}
		})
	}
}

func TestUpstreamTimeout(t *testing.T) {
	cancelled := make(chan struct{})
	slow := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(5 * time.Second):
		}
	}
	h := newHarness(t, options{ml: []http.HandlerFunc{slow}, ragTimeout: 200 * time.Millisecond})
	start := time.Now()
	resp := h.do(t, rag())
	if resp.StatusCode != 504 {
		t.Fatalf("status %d, want 504", resp.StatusCode)
	}
	if env := readEnvelope(t, resp); env.Error.Type != "upstream_timeout" {
		t.Errorf("type %q", env.Error.Type)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v; the route timeout is 200ms", d)
	}
	select {
	case <-cancelled:
	case <-time.After(3 * time.Second):
		t.Error("the upstream call was not cancelled at the deadline")
	}
}

func TestClientCancelCancelsUpstream(t *testing.T) {
	arrived := make(chan struct{})
	cancelled := make(chan struct{})
	slow := func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
		}
	}
	h := newHarness(t, options{ml: []http.HandlerFunc{slow}})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		resp, err := h.gw.Client().Do(h.newRequest(t, ctx, rag()))
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-arrived
	cancelAt := time.Now()
	cancel()
	select {
	case <-cancelled:
		// No threshold here: the gap is reported, and docs/benchmarks.md
		// records it.
		t.Logf("client cancel → upstream cancelled in %v", time.Since(cancelAt))
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream did not see the client's cancellation")
	}
	if err := <-errc; err == nil {
		t.Error("client request succeeded after cancellation")
	}
	waitFor(t, "a 499 in the metrics", func() bool {
		text := body(t, h.do(t, req{method: "GET", path: "/metrics"}))
		return strings.Contains(text, `trine_gateway_requests_total{code="499",route="POST /v1/rag/query"} 1`)
	})
	if !strings.Contains(h.logs.String(), `"status":499`) {
		t.Error("the cancellation was not logged with status 499")
	}
}

func TestUpstreamErrorMapping(t *testing.T) {
	respond := func(code int, header map[string]string, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			for k, v := range header {
				w.Header().Set(k, v)
			}
			w.WriteHeader(code)
			_, _ = io.WriteString(w, body)
		}
	}
	envelope := func(typ, msg string) string {
		return `{"error":{"type":"` + typ + `","message":"` + msg + `","request_id":"upstream-own-id"}}`
	}
	tests := []struct {
		name       string
		upstream   http.HandlerFunc
		wantCode   int
		wantType   string
		wantMsg    string // "" to skip
		retryAfter string
	}{
		{"400 envelope passes through",
			respond(400, nil, envelope("invalid_request", "query must not be empty")),
			400, "invalid_request", "query must not be empty", ""},
		{"404 envelope passes through",
			respond(404, nil, envelope("not_found", "unknown collection")),
			404, "not_found", "unknown collection", ""},
		{"429 keeps Retry-After",
			respond(429, map[string]string{"Retry-After": "3"}, envelope("rate_limited", "slow down")),
			429, "rate_limited", "slow down", "3"},
		{"503 becomes unavailable with Retry-After",
			respond(503, map[string]string{"Retry-After": "7"}, envelope("unavailable", "sandbox saturated")),
			503, "unavailable", "sandbox saturated", "7"},
		{"garbage 503 gets a default Retry-After",
			respond(503, nil, "overloaded /srv/internal"),
			503, "unavailable", "the upstream service is temporarily unavailable", "1"},
		{"garbage 500 is hidden",
			respond(500, nil, "Traceback: secret /srv/internal/path"),
			502, "upstream_error", "the upstream service failed", ""},
		{"500 envelope is not passed through",
			respond(500, nil, envelope("internal_error", "secret /srv/internal/path")),
			502, "upstream_error", "the upstream service failed", ""},
		{"4xx without an envelope is hidden",
			respond(400, nil, "<html>secret /srv/internal/path</html>"),
			502, "upstream_error", "", ""},
		{"envelope with a malformed type is hidden",
			respond(400, nil, envelope("Bad Type", "secret /srv/internal/path")),
			502, "upstream_error", "", ""},
		{"refused internal token is the gateway's fault",
			respond(401, nil, envelope("unauthorized", "missing internal token")),
			502, "upstream_error", "", ""},
		{"redirect is not followed",
			respond(302, map[string]string{"Location": "http://example.invalid/"}, ""),
			502, "upstream_error", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, options{ml: []http.HandlerFunc{tc.upstream}})
			resp := h.do(t, rag())
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantCode)
			}
			if ra := resp.Header.Get("Retry-After"); ra != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", ra, tc.retryAfter)
			}
			env := readEnvelope(t, resp)
			if env.Error.Type != tc.wantType || tc.wantMsg != "" && env.Error.Message != tc.wantMsg {
				t.Errorf("got %s %q, want %s %q", env.Error.Type, env.Error.Message, tc.wantType, tc.wantMsg)
			}
			if strings.Contains(env.Error.Message, "secret") {
				t.Errorf("upstream detail leaked to the client: %q", env.Error.Message)
			}
			if env.Error.RequestID == "upstream-own-id" {
				t.Error("request_id was not re-stamped")
			}
		})
	}
}

func TestStreamingIsNotBuffered(t *testing.T) {
	release := make(chan struct{})
	stream := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = io.WriteString(w, "event: token\ndata: first\n\n")
		w.(http.Flusher).Flush()
		<-release
		_, _ = io.WriteString(w, "event: done\ndata: {}\n\n")
	}
	h := newHarness(t, options{ml: []http.HandlerFunc{stream}})
	defer close(release)
	resp := h.do(t, rag())
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("status %d Content-Type %q", resp.StatusCode, ct)
	}
	if resp.Header.Get("X-Request-ID") == "" {
		t.Error("streamed response lacks X-Request-ID")
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case got := <-lines:
		if got != "event: token" {
			t.Errorf("first line %q", got)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the first event did not arrive before the upstream finished")
	}
}

func TestUpstreamFailsMidStream(t *testing.T) {
	truncated := func(w http.ResponseWriter, r *http.Request) {
		// Promise more than is sent: the upstream's server then drops the
		// connection, as a crashed replica would.
		w.Header().Set("Content-Length", "1000")
		_, _ = io.WriteString(w, `{"answer":"par`)
	}
	h := newHarness(t, options{ml: []http.HandlerFunc{truncated}})
	resp := h.do(t, rag())
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("a truncated upstream body reached the client as a complete response")
	}
}

func TestFixedLengthAnswerKeepsItsLength(t *testing.T) {
	// Larger than the relay's copy buffer, so it arrives in several reads,
	// each flushed before the last.
	answer := `{"answer":"` + strings.Repeat("a", 100<<10) + `"}`
	fixed := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
		_, _ = io.WriteString(w, answer)
	}
	h := newHarness(t, options{ml: []http.HandlerFunc{fixed}})
	resp := h.do(t, rag())
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(answer)) {
		t.Fatalf("status %d Content-Length %d, want 200 and %d", resp.StatusCode, resp.ContentLength, len(answer))
	}
	if got := body(t, resp); got != answer {
		t.Errorf("body of %d bytes differs from the upstream's %d", len(got), len(answer))
	}
}
