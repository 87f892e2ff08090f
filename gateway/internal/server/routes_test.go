package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestAuth(t *testing.T) {
	h := newHarness(t, options{})
	tests := []struct {
		name     string
		path     string
		header   map[string]string
		wantCode int
		wantType string
	}{
		{"missing key", "/v1/rag/query", nil, 401, "unauthorized"},
		{"unknown key", "/v1/rag/query", map[string]string{"Authorization": "Bearer nope"}, 401, "unauthorized"},
		{"wrong scheme", "/v1/rag/query", map[string]string{"Authorization": "Basic " + fullKey}, 401, "unauthorized"},
		{"empty bearer", "/v1/rag/query", map[string]string{"Authorization": "Bearer "}, 401, "unauthorized"},
		{"key lacks scope", "/v1/sandbox/run", map[string]string{"Authorization": "Bearer " + ragOnlyKey}, 403, "forbidden"},
		{"scheme is case-insensitive", "/v1/rag/query", map[string]string{"Authorization": "bearer " + ragOnlyKey}, 200, ""},
		{"key with scope", "/v1/sandbox/run", map[string]string{"Authorization": "Bearer " + fullKey}, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.do(t, req{path: tc.path, body: `{}`, header: tc.header})
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantCode, body(t, resp))
			}
			if tc.wantType == "" {
				return
			}
			if env := readEnvelope(t, resp); env.Error.Type != tc.wantType {
				t.Errorf("type %q, want %q", env.Error.Type, tc.wantType)
			}
		})
	}
	if n := len(h.ml[0].seen()) + len(h.sandbox.seen()); n != 2 {
		t.Errorf("upstreams received %d requests, want only the 2 authorised ones", n)
	}
}

func TestRequestErrors(t *testing.T) {
	h := newHarness(t, options{maxBody: 64})
	big := `{"query":"` + strings.Repeat("x", 100) + `"}`
	tests := []struct {
		name      string
		q         req
		chunked   bool
		wantCode  int
		wantType  string
		wantAllow string
	}{
		{"unknown path", req{method: "GET", path: "/nope"}, false, 404, "not_found", ""},
		{"unclean path is not redirected", req{path: "/v1//rag/query", key: fullKey, body: `{}`}, false, 404, "not_found", ""},
		{"dot segment is not redirected", req{method: "GET", path: "/v1/../healthz"}, false, 404, "not_found", ""},
		{"trailing slash", req{path: "/v1/rag/query/", key: fullKey, body: `{}`}, false, 404, "not_found", ""},
		{"unknown v1 path", req{path: "/v1/nope", key: fullKey, body: `{}`}, false, 404, "not_found", ""},
		{"wrong method on v1 route", req{method: "GET", path: "/v1/rag/query", key: fullKey}, false, 405, "method_not_allowed", "POST"},
		{"wrong method on healthz", req{method: "POST", path: "/healthz", body: `{}`}, false, 405, "method_not_allowed", "GET, HEAD"},
		{"text/plain", req{path: "/v1/rag/query", key: fullKey, body: `{}`, header: map[string]string{"Content-Type": "text/plain"}}, false, 415, "unsupported_media_type", ""},
		{"no content type", req{path: "/v1/rag/query", key: fullKey}, false, 415, "unsupported_media_type", ""},
		{"body too large", req{path: "/v1/rag/query", key: fullKey, body: big}, false, 413, "payload_too_large", ""},
		{"chunked body too large", req{path: "/v1/rag/query", key: fullKey, body: big}, true, 413, "payload_too_large", ""},
		{"bad JSON", req{path: "/v1/rag/query", key: fullKey, body: `{"query":`}, false, 400, "invalid_request", ""},
		{"JSON array", req{path: "/v1/rag/query", key: fullKey, body: `[1,2]`}, false, 400, "invalid_request", ""},
		{"trailing garbage", req{path: "/v1/sandbox/run", key: fullKey, body: `{} x`}, false, 400, "invalid_request", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.newRequest(t, context.Background(), tc.q)
			if tc.chunked {
				// Hiding the length makes the client send the body chunked,
				// so only the reading limit can catch it.
				r.Body = io.NopCloser(io.MultiReader(r.Body))
				r.ContentLength = -1
			}
			resp, err := h.gw.Client().Do(r)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantCode, body(t, resp))
			}
			if allow := resp.Header.Get("Allow"); allow != tc.wantAllow {
				t.Errorf("Allow %q, want %q", allow, tc.wantAllow)
			}
			if env := readEnvelope(t, resp); env.Error.Type != tc.wantType {
				t.Errorf("type %q, want %q", env.Error.Type, tc.wantType)
			}
		})
	}
	if n := len(h.ml[0].seen()) + len(h.sandbox.seen()); n != 0 {
		t.Errorf("upstreams received %d requests, want 0", n)
	}
}

func TestContentTypeWithParameters(t *testing.T) {
	h := newHarness(t, options{})
	q := rag()
	q.header = map[string]string{"Content-Type": "application/json; charset=utf-8"}
	if resp := h.do(t, q); resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body(t, resp))
	}
	if got := h.ml[0].seen()[0].Header.Get("Content-Type"); got != "application/json; charset=utf-8" {
		t.Errorf("upstream Content-Type %q", got)
	}
}

func TestRequestID(t *testing.T) {
	generated := regexp.MustCompile(`^[0-9a-f]{32}$`)
	tests := []struct {
		name   string
		sent   string
		wantID string // "" means a fresh generated one
	}{
		{"echoes a sane ID", "client-id_1.2:3", "client-id_1.2:3"},
		{"generates when absent", "", ""},
		{"replaces spaces", "bad id", ""},
		{"replaces injection", `x"}{"level":"ERROR`, ""},
		{"replaces over-long", strings.Repeat("a", 129), ""},
		{"keeps max length", strings.Repeat("a", 128), strings.Repeat("a", 128)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, options{})
			q := rag()
			q.header = map[string]string{"X-Request-ID": tc.sent}
			resp := h.do(t, q)
			got := resp.Header.Get("X-Request-ID")
			switch {
			case tc.wantID != "" && got != tc.wantID:
				t.Errorf("X-Request-ID %q, want %q", got, tc.wantID)
			case tc.wantID == "" && !generated.MatchString(got):
				t.Errorf("X-Request-ID %q is not a generated ID", got)
			}
			if up := h.ml[0].seen()[0].Header.Get("X-Request-ID"); up != got {
				t.Errorf("upstream saw X-Request-ID %q, client got %q", up, got)
			}
			waitFor(t, "a log line with the request ID", func() bool {
				return strings.Contains(h.logs.String(), `"request_id":"`+got+`"`)
			})
		})
	}
}

func TestForwardedHeaders(t *testing.T) {
	h := newHarness(t, options{})
	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	q := rag()
	q.header = map[string]string{
		"X-Trine-Internal-Token": "forged-by-client-0000",
		"Traceparent":            traceparent,
		"Tracestate":             "vendor=abc",
		"Cookie":                 "session=1",
		"X-Request-ID":           "rid-1",
	}
	if resp := h.do(t, q); resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body(t, resp))
	}
	got := h.ml[0].seen()[0]
	tests := []struct {
		header string
		want   []string
	}{
		{"X-Trine-Internal-Token", []string{internalToken}},
		{"Authorization", nil},
		{"Cookie", nil},
		{"Tracestate", []string{"vendor=abc"}},
		{"X-Request-ID", []string{"rid-1"}},
		{"Content-Type", []string{"application/json"}},
	}
	for _, tc := range tests {
		t.Run(tc.header, func(t *testing.T) {
			if vs := got.Header.Values(tc.header); strings.Join(vs, "|") != strings.Join(tc.want, "|") {
				t.Errorf("upstream %s = %q, want %q", tc.header, vs, tc.want)
			}
		})
	}
	if got.Path != "/rag/query" || got.Body != rag().body {
		t.Errorf("upstream got %s %q", got.Path, got.Body)
	}
	// The trace continues with a new span for the upstream call.
	tp := got.Header.Get("Traceparent")
	if !strings.HasPrefix(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || !strings.HasSuffix(tp, "-01") ||
		tp == traceparent || len(tp) != len(traceparent) {
		t.Errorf("upstream traceparent %q does not continue %q with a new span", tp, traceparent)
	}
	// The upstream learns how long it has (RAG timeout is 5s in tests).
	if ms, err := strconv.Atoi(got.Header.Get("X-Trine-Deadline-Ms")); err != nil || ms <= 0 || ms > 5000 {
		t.Errorf("X-Trine-Deadline-Ms %q", got.Header.Get("X-Trine-Deadline-Ms"))
	}
}

func TestTraceStartedWhenAbsent(t *testing.T) {
	h := newHarness(t, options{})
	q := rag()
	q.header = map[string]string{"Traceparent": "not-a-traceparent", "Tracestate": "vendor=abc"}
	h.do(t, q)
	got := h.ml[0].seen()[0].Header
	if tp := got.Get("Traceparent"); len(tp) != 55 || !strings.HasPrefix(tp, "00-") {
		t.Errorf("no fresh traceparent upstream: %q", tp)
	}
	if ts := got.Get("Tracestate"); ts != "" {
		t.Errorf("tracestate %q forwarded without its traceparent", ts)
	}
}

func TestSandboxRoute(t *testing.T) {
	h := newHarness(t, options{})
	resp := h.do(t, req{path: "/v1/sandbox/run", key: fullKey, body: `{"language":"python","code":"print(1)"}`})
	if resp.StatusCode != 200 || body(t, resp) != `{"replica":"sandbox"}` {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if s := h.sandbox.seen(); len(s) != 1 || s[0].Path != "/run" {
		t.Errorf("sandbox saw %+v", s)
	}
}

func TestLogsNameKeyNotSecret(t *testing.T) {
	h := newHarness(t, options{})
	h.do(t, rag())
	h.do(t, req{path: "/v1/sandbox/run", key: ragOnlyKey, body: `{}`})
	// The access line is written after the response is complete, so the
	// client may see the answer first.
	var sawFull, sawRagOnly bool
	waitFor(t, "access log lines with key IDs", func() bool {
		for _, line := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("log line is not JSON: %s", line)
			}
			if rec["msg"] == "request" {
				sawFull = sawFull || rec["key_id"] == "full" && rec["status"] == 200.0
				sawRagOnly = sawRagOnly || rec["key_id"] == "rag-only" && rec["status"] == 403.0
			}
		}
		return sawFull && sawRagOnly
	})
	if logs := h.logs.String(); strings.Contains(logs, fullKey) || strings.Contains(logs, ragOnlyKey) {
		t.Error("a raw API key appears in the logs")
	}
}

func TestHealthz(t *testing.T) {
	h := newHarness(t, options{})
	resp := h.do(t, req{method: "GET", path: "/healthz"})
	if got := strings.TrimSpace(body(t, resp)); resp.StatusCode != 200 || got != `{"status":"ok"}` {
		t.Errorf("healthz: %d %s", resp.StatusCode, got)
	}
}

func TestReadyz(t *testing.T) {
	tests := []struct {
		name       string
		mlHealth   []int
		sbHealth   int
		wantCode   int
		wantStatus string
	}{
		{"all healthy", []int{200, 200}, 200, 200, "ready"},
		{"one ML replica down", []int{500, 200}, 200, 200, "ready"},
		{"all ML replicas down", []int{500, 503}, 200, 503, "not_ready"},
		{"sandbox down", []int{200, 200}, 500, 503, "not_ready"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, options{ml: []http.HandlerFunc{echo("ml-0"), echo("ml-1")}})
			for i, code := range tc.mlHealth {
				h.ml[i].health.Store(int32(code))
			}
			h.sandbox.health.Store(int32(tc.sbHealth))
			h.srv.CheckUpstreams(context.Background())

			resp := h.do(t, req{method: "GET", path: "/readyz"})
			if resp.StatusCode != tc.wantCode {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.wantCode)
			}
			var got struct {
				Status    string `json:"status"`
				Upstreams []struct {
					Name      string `json:"name"`
					URL       string `json:"url"`
					Healthy   bool   `json:"healthy"`
					LastError string `json:"last_error"`
				} `json:"upstreams"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if got.Status != tc.wantStatus || len(got.Upstreams) != 3 {
				t.Fatalf("readyz body %+v", got)
			}
			want := append(append([]int(nil), tc.mlHealth...), tc.sbHealth)
			urls := []string{h.ml[0].URL, h.ml[1].URL, h.sandbox.URL}
			for i, name := range []string{"ml-0", "ml-1", "sandbox"} {
				u := got.Upstreams[i]
				healthy := want[i] == 200
				if u.Name != name || u.URL != urls[i] || u.Healthy != healthy || (u.LastError == "") != healthy {
					t.Errorf("upstream %d = %+v, want %s healthy=%v", i, u, name, healthy)
				}
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	h := newHarness(t, options{})
	h.do(t, rag())
	h.do(t, req{method: "GET", path: "/some/random/path"})
	want := []string{
		`trine_gateway_requests_total{code="200",route="POST /v1/rag/query"} 1`,
		`trine_gateway_requests_total{code="404",route="unmatched"} 1`,
		`trine_gateway_request_duration_seconds_count{route="POST /v1/rag/query"} 1`,
		`trine_gateway_requests_in_flight 1`, // the scrape itself
		`trine_gateway_upstream_healthy{upstream="ml-0"} 1`,
		`trine_gateway_upstream_healthy{upstream="sandbox"} 1`,
	}
	var text string
	// Requests are counted once their response is complete, which the
	// client may see first; scrape until the counts settle.
	waitFor(t, "metrics to include "+strings.Join(want, ", "), func() bool {
		text = body(t, h.do(t, req{method: "GET", path: "/metrics"}))
		for _, w := range want {
			if !strings.Contains(text, w) {
				return false
			}
		}
		return true
	})
	if strings.Contains(text, "/some/random/path") {
		t.Error("a raw path became a metric label")
	}
}
