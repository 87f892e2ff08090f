package server_test

import (
	"net/http"
	"testing"
)

// recordRoute answers like the ML service's collection routes: 204 for
// DELETE, a small JSON object otherwise.
func recordRoute(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodDelete {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"collection":"docs","documents":1,"chunks":1}`))
}

func TestCollectionRoutes(t *testing.T) {
	h := newHarness(t, options{ml: []http.HandlerFunc{recordRoute}})
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantMethod string
		wantPath   string
		wantCode   int
	}{
		{"ingest", "POST", "/v1/collections/docs/documents", `{"documents":[{"text":"t"}]}`,
			"POST", "/collections/docs/documents", 200},
		{"list", "GET", "/v1/collections", "", "GET", "/collections", 200},
		{"get", "GET", "/v1/collections/docs", "", "GET", "/collections/docs", 200},
		{"drop", "DELETE", "/v1/collections/my_docs-2", "", "DELETE", "/collections/my_docs-2", 204},
		{"delete document", "DELETE", "/v1/collections/docs/documents/a%2Fb%20c", "",
			"DELETE", "/collections/docs/documents/a%2Fb%20c", 204},
		{"dots stay escaped", "DELETE", "/v1/collections/docs/documents/a.b", "",
			"DELETE", "/collections/docs/documents/a.b", 204},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.ml[0].seen())
			resp := h.do(t, req{method: tc.method, path: tc.path, body: tc.body, key: fullKey})
			got := body(t, resp)
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantCode, got)
			}
			if tc.wantCode == http.StatusNoContent && got != "" {
				t.Errorf("204 with a body: %q", got)
			}
			all := h.ml[0].seen()
			if len(all) != before+1 {
				t.Fatalf("upstream saw %d requests, want 1", len(all)-before)
			}
			s := all[len(all)-1]
			if s.Method != tc.wantMethod || s.RawPath != tc.wantPath || s.Body != tc.body {
				t.Errorf("upstream saw %s %s %q, want %s %s %q", s.Method, s.RawPath, s.Body,
					tc.wantMethod, tc.wantPath, tc.body)
			}
		})
	}
}

func TestCollectionRouteErrors(t *testing.T) {
	h := newHarness(t, options{ml: []http.HandlerFunc{recordRoute}})
	tests := []struct {
		name, method, path, body, key string
		wantCode                      int
	}{
		{"upper case name", "GET", "/v1/collections/Docs", "", fullKey, 400},
		{"leading dash", "DELETE", "/v1/collections/-docs", "", fullKey, 400},
		{"name too long", "GET", "/v1/collections/a123456789012345678901234567890123456789012345678901234567890123", "", fullKey, 400},
		{"escaped slash in name", "GET", "/v1/collections/a%2Fb", "", fullKey, 400},
		{"dot-dot document id", "DELETE", "/v1/collections/docs/documents/%2E%2E", "", fullKey, 400},
		{"read needs a key", "GET", "/v1/collections", "", "", 401},
		{"write needs ingest", "POST", "/v1/collections/docs/documents", `{"documents":[]}`, ragOnlyKey, 403},
		{"delete needs ingest", "DELETE", "/v1/collections/docs", "", ragOnlyKey, 403},
		{"rag reads", "GET", "/v1/collections/docs", "", ragOnlyKey, 200},
		{"ingest body must be JSON", "POST", "/v1/collections/docs/documents", `[1]`, fullKey, 400},
		{"no PUT", "PUT", "/v1/collections/docs", "", fullKey, 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.ml[0].seen())
			resp := h.do(t, req{method: tc.method, path: tc.path, body: tc.body, key: tc.key})
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantCode, body(t, resp))
			}
			if tc.wantCode >= 400 {
				readEnvelope(t, resp)
				if n := len(h.ml[0].seen()) - before; n != 0 {
					t.Errorf("a rejected request reached the upstream %d times", n)
				}
			}
		})
	}
}

func TestCollectionNotFoundPassesThrough(t *testing.T) {
	notFound := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":{"type":"not_found","message":"no collection named docs","request_id":"x"}}`))
	}
	h := newHarness(t, options{ml: []http.HandlerFunc{notFound}})
	resp := h.do(t, req{method: "GET", path: "/v1/collections/docs", key: fullKey})
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if env := readEnvelope(t, resp); env.Error.Type != "not_found" || env.Error.Message != "no collection named docs" {
		t.Errorf("envelope %+v", env.Error)
	}
}
