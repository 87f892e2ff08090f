package server_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"trine/gateway/internal/config"
	"trine/gateway/internal/ratelimit"
)

func TestRateLimitHeadersAndRefusal(t *testing.T) {
	h := newHarness(t, options{limits: func(l *config.Limits) {
		l.Default = ratelimit.Rule{Rate: 0.01, Burst: 2}
	}})
	for i, wantRemaining := range []string{"1", "0"} {
		resp := h.do(t, rag())
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
		if got := resp.Header.Get("RateLimit-Limit"); got != "2" {
			t.Errorf("RateLimit-Limit %q", got)
		}
		if got := resp.Header.Get("RateLimit-Remaining"); got != wantRemaining {
			t.Errorf("request %d: RateLimit-Remaining %q, want %s", i, got, wantRemaining)
		}
		if reset, err := strconv.Atoi(resp.Header.Get("RateLimit-Reset")); err != nil || reset < 1 {
			t.Errorf("RateLimit-Reset %q", resp.Header.Get("RateLimit-Reset"))
		}
	}
	resp := h.do(t, rag())
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third request: status %d", resp.StatusCode)
	}
	if env := readEnvelope(t, resp); env.Error.Type != "rate_limited" {
		t.Errorf("type %q", env.Error.Type)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	if resp.Header.Get("RateLimit-Remaining") != "0" {
		t.Error("429 without RateLimit headers")
	}
	if n := len(h.ml[0].seen()); n != 2 {
		t.Errorf("upstream saw %d requests, want 2", n)
	}
	// Other keys have their own budget; a wrong-scope request still counts.
	other := rag()
	other.key = ragOnlyKey
	if resp := h.do(t, other); resp.StatusCode != 200 || resp.Header.Get("RateLimit-Remaining") != "1" {
		t.Errorf("other key: status %d remaining %q", resp.StatusCode, resp.Header.Get("RateLimit-Remaining"))
	}
	sb := req{path: "/v1/sandbox/run", key: ragOnlyKey, body: `{}`}
	if resp := h.do(t, sb); resp.StatusCode != 403 || resp.Header.Get("RateLimit-Remaining") != "0" {
		t.Errorf("wrong scope: status %d remaining %q", resp.StatusCode, resp.Header.Get("RateLimit-Remaining"))
	}
	// Unauthenticated requests carry no rate-limit headers.
	anon := rag()
	anon.key = ""
	if resp := h.do(t, anon); resp.StatusCode != 401 || resp.Header.Get("RateLimit-Limit") != "" {
		t.Errorf("anonymous: status %d, RateLimit-Limit %q", resp.StatusCode, resp.Header.Get("RateLimit-Limit"))
	}
	text := body(t, h.do(t, req{method: "GET", path: "/metrics"}))
	for _, want := range []string{`trine_gateway_ratelimit_decisions_total{decision="limited"} 1`,
		`trine_gateway_ratelimit_decisions_total{decision="allowed"} 4`} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestRouteRateLimit(t *testing.T) {
	h := newHarness(t, options{limits: func(l *config.Limits) {
		l.Routes = map[string]ratelimit.Rule{"POST /v1/sandbox/run": {Rate: 0.01, Burst: 1}}
	}})
	sb := req{path: "/v1/sandbox/run", key: fullKey, body: `{}`}
	if resp := h.do(t, sb); resp.StatusCode != 200 || resp.Header.Get("RateLimit-Limit") != "1" {
		t.Fatalf("first: status %d limit %q", resp.StatusCode, resp.Header.Get("RateLimit-Limit"))
	}
	if resp := h.do(t, sb); resp.StatusCode != 429 {
		t.Errorf("second sandbox run: status %d, want 429", resp.StatusCode)
	}
	if resp := h.do(t, rag()); resp.StatusCode != 200 {
		t.Errorf("another route: status %d, want 200", resp.StatusCode)
	}
}

func TestInFlightCap(t *testing.T) {
	arrived := make(chan struct{}, 2)
	release := make(chan struct{})
	hold := func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		echo("ml-0")(w, r)
	}
	h := newHarness(t, options{ml: []http.HandlerFunc{hold}, limits: func(l *config.Limits) { l.MaxInFlight = 1 }})
	done := make(chan int)
	go func() {
		resp, err := h.gw.Client().Do(h.newRequest(t, context.Background(), rag()))
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	<-arrived
	resp := h.do(t, rag())
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second concurrent request: status %d", resp.StatusCode)
	}
	close(release)
	if code := <-done; code != 200 {
		t.Errorf("first request: %d", code)
	}
	// The slot is released just after the answer went out, so the client
	// may be a moment ahead of it.
	waitFor(t, "the slot to be released", func() bool { return h.do(t, rag()).StatusCode == 200 })
}

func TestRouteBodyLimit(t *testing.T) {
	h := newHarness(t, options{limits: func(l *config.Limits) {
		l.RouteMaxBody = map[string]int64{"POST /v1/sandbox/run": 20}
	}})
	big := `{"code":"` + strings.Repeat("x", 30) + `"}`
	if resp := h.do(t, req{path: "/v1/sandbox/run", key: fullKey, body: big}); resp.StatusCode != 413 {
		t.Errorf("sandbox: status %d, want 413", resp.StatusCode)
	}
	q := rag()
	q.body = `{"query":"` + strings.Repeat("x", 30) + `","documents":["a"]}`
	if resp := h.do(t, q); resp.StatusCode != 200 {
		t.Errorf("rag keeps the global limit: status %d", resp.StatusCode)
	}
}
