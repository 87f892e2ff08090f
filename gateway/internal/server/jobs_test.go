package server_test

import (
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"trine/gateway/internal/config"
)

// validator answers validate-only calls like the ML service and sandbox:
// 400 envelope for bodies containing "bad", 204 otherwise. Real calls are
// not expected and answer 500.
func validator(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Trine-Validate-Only") != "1" {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	body, _ := io.ReadAll(r.Body)
	if strings.Contains(string(body), "bad") {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":{"type":"invalid_request","message":"unknown language \"bad\"","request_id":"upstream-id"}}`)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func newJobsHarness(t *testing.T, o options) *harness {
	t.Helper()
	if o.ml == nil {
		o.ml = []http.HandlerFunc{validator}
	}
	if o.sandbox == nil {
		o.sandbox = validator
	}
	return newHarness(t, o)
}

// jobRows counts the jobs in the queue database.
func (h *harness) jobRows(t *testing.T) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+h.cfg.Jobs.SQLitePath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM jobs`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func postJob(body string) req {
	return req{path: "/v1/jobs", key: fullKey, body: body}
}

type accepted struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

func enqueueOK(t *testing.T, h *harness, q req) accepted {
	t.Helper()
	resp := h.do(t, q)
	raw := body(t, resp)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d: %s", resp.StatusCode, raw)
	}
	var a accepted
	if err := json.Unmarshal([]byte(raw), &a); err != nil || a.Status != "queued" || !strings.HasPrefix(a.ID, "job_") {
		t.Fatalf("body %s", raw)
	}
	if loc := resp.Header.Get("Location"); loc != "/v1/jobs/"+a.ID {
		t.Errorf("Location %q", loc)
	}
	return a
}

func TestJobEnqueueValidatesUpstream(t *testing.T) {
	h := newJobsHarness(t, options{})
	tests := []struct {
		name, body string
		fake       func() *fake
		wantPath   string
		wantBody   string
	}{
		{"sandbox.run", `{"type":"sandbox.run","input":{"language":"python","code":"1"}}`,
			func() *fake { return h.sandbox }, "/run", `{"language":"python","code":"1"}`},
		{"rag.query", `{"type":"rag.query","input":{"query":"q","stream":false}}`,
			func() *fake { return h.ml[0] }, "/rag/query", `{"query":"q","stream":false}`},
		{"ingest", `{"type":"ingest","input":{"collection":"docs","documents":[{"text":"t"}]}}`,
			func() *fake { return h.ml[0] }, "/collections/docs/documents", `{"documents":[{"text":"t"}]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := postJob(tc.body)
			q.header = map[string]string{"X-Request-ID": "req-" + tc.name}
			enqueueOK(t, h, q)
			all := tc.fake().seen()
			s := all[len(all)-1]
			if s.Method != "POST" || s.Path != tc.wantPath || s.Body != tc.wantBody ||
				s.Header.Get("X-Trine-Validate-Only") != "1" || s.Header.Get("X-Trine-Internal-Token") != internalToken ||
				s.Header.Get("X-Request-ID") != "req-"+tc.name || s.Header.Get("Traceparent") == "" {
				t.Errorf("upstream saw %s %s %q headers %v", s.Method, s.Path, s.Body, s.Header)
			}
		})
	}
	if n := h.jobRows(t); n != 3 {
		t.Errorf("%d jobs queued, want 3", n)
	}
}

type publicJob struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Status    string          `json:"status"`
	Result    json.RawMessage `json:"result"`
	Error     json.RawMessage `json:"error"`
	CreatedAt string          `json:"created_at"`
	UpdatedAt string          `json:"updated_at"`
	Attempts  int             `json:"attempts"`
	Webhook   *struct {
		URL      string `json:"url"`
		Status   string `json:"status"`
		Attempts []struct {
			At         string `json:"at"`
			StatusCode int    `json:"status_code"`
			Error      string `json:"error"`
		} `json:"attempts"`
	} `json:"webhook"`
}

func getJob(t *testing.T, h *harness, id, key string) (int, publicJob) {
	t.Helper()
	resp := h.do(t, req{method: "GET", path: "/v1/jobs/" + id, key: key})
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, publicJob{}
	}
	var j publicJob
	if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, j
}

func TestJobGet(t *testing.T) {
	h := newJobsHarness(t, options{})
	a := enqueueOK(t, h, postJob(`{"type":"sandbox.run","input":{"code":"1"}}`))
	code, j := getJob(t, h, a.ID, fullKey)
	if code != 200 || j.ID != a.ID || j.Type != "sandbox.run" || j.Status != "queued" || string(j.Result) != "null" ||
		string(j.Error) != "null" || j.Attempts != 0 || j.Webhook != nil || !strings.HasSuffix(j.CreatedAt, "Z") ||
		len(j.CreatedAt) != len("2006-01-02T15:04:05.000Z") || j.UpdatedAt != j.CreatedAt {
		t.Errorf("job %+v", j)
	}
	for name, q := range map[string]req{
		"other key's job": {method: "GET", path: "/v1/jobs/" + a.ID, key: noSecretKey},
		"unknown id":      {method: "GET", path: "/v1/jobs/job_aaaaaaaaaaaaaaaaaaaaaaaaaa", key: fullKey},
		"malformed id":    {method: "GET", path: "/v1/jobs/nope", key: fullKey},
	} {
		resp := h.do(t, q)
		if env := readEnvelope(t, resp); resp.StatusCode != 404 || env.Error.Type != "not_found" {
			t.Errorf("%s: %d %+v", name, resp.StatusCode, env)
		}
	}
	resp := h.do(t, req{method: "GET", path: "/v1/jobs/" + a.ID, key: ragOnlyKey})
	if resp.StatusCode != 403 {
		t.Errorf("without the jobs scope: %d", resp.StatusCode)
	}
}

func TestJobIdempotency(t *testing.T) {
	h := newJobsHarness(t, options{})
	q := postJob(`{"type":"sandbox.run","input":{"code":"1"}}`)
	q.header = map[string]string{"Idempotency-Key": "order-42"}
	first := enqueueOK(t, h, q)
	if again := enqueueOK(t, h, q); again.ID != first.ID {
		t.Errorf("repeat made job %s, want %s", again.ID, first.ID)
	}
	q.body = `{"type":"sandbox.run","input":{"code":"2"}}`
	resp := h.do(t, q)
	env := readEnvelope(t, resp)
	if resp.StatusCode != 400 || env.Error.Type != "invalid_request" || env.Error.Message != "Idempotency-Key reused with a different request" {
		t.Errorf("different body: %d %+v", resp.StatusCode, env.Error)
	}
	if n := h.jobRows(t); n != 1 {
		t.Errorf("%d jobs queued, want 1", n)
	}
}

// TestJobRefusals checks that each bad request gets a clear envelope and
// queues nothing.
func TestJobRefusals(t *testing.T) {
	h := newJobsHarness(t, options{limits: func(l *config.Limits) {
		l.RouteMaxBody = map[string]int64{"POST /v1/sandbox/run": 64}
	}})
	long := strings.Repeat("x", 100)
	tests := []struct {
		name     string
		q        req
		code     int
		typ, msg string
	}{
		{"unknown type", postJob(`{"type":"mine.bitcoin","input":{}}`), 400, "invalid_request", "unknown job type"},
		{"invalid input", postJob(`{"type":"sandbox.run","input":{"language":"bad"}}`), 400, "invalid_request", `unknown language "bad"`},
		{"input not an object", postJob(`{"type":"sandbox.run","input":"code"}`), 400, "invalid_request", `"input" must be a JSON object`},
		{"no input", postJob(`{"type":"sandbox.run"}`), 400, "invalid_request", `"input" must be a JSON object`},
		{"unknown field", postJob(`{"type":"sandbox.run","input":{},"priority":1}`), 400, "invalid_request", "no other fields"},
		{"trailing data", postJob(`{"type":"sandbox.run","input":{}} {}`), 400, "invalid_request", "not valid JSON"},
		{"not JSON", postJob(`{"type":`), 400, "invalid_request", "not valid JSON"},
		{"streaming rag", postJob(`{"type":"rag.query","input":{"query":"q","stream":true}}`), 400, "invalid_request", "cannot stream"},
		{"bad collection", postJob(`{"type":"ingest","input":{"collection":"Bad Name","documents":[]}}`), 400, "invalid_request", "collection name"},
		{"ingest extra field", postJob(`{"type":"ingest","input":{"collection":"c","documents":[],"x":1}}`), 400, "invalid_request", "ingest input"},
		{"ftp webhook", postJob(`{"type":"sandbox.run","input":{},"webhook_url":"ftp://example.com/h"}`), 400, "invalid_request", "https"},
		{"http webhook", postJob(`{"type":"sandbox.run","input":{},"webhook_url":"http://93.184.216.34/h"}`), 400, "invalid_request", "https"},
		{"loopback webhook", postJob(`{"type":"sandbox.run","input":{},"webhook_url":"https://127.0.0.1/h"}`), 400, "invalid_request", "private"},
		{"unresolvable webhook", postJob(`{"type":"sandbox.run","input":{},"webhook_url":"https://nothing.invalid/h"}`), 400, "invalid_request", "does not resolve"},
		{"empty webhook", postJob(`{"type":"sandbox.run","input":{},"webhook_url":""}`), 400, "invalid_request", "must not be empty"},
		{"webhook without secret", req{path: "/v1/jobs", key: noSecretKey,
			body: `{"type":"sandbox.run","input":{},"webhook_url":"https://93.184.216.34/h"}`}, 400, "invalid_request", "webhook_secret"},
		{"input over the route's limit", postJob(`{"type":"sandbox.run","input":{"code":"` + long + `"}}`), 413, "payload_too_large", "POST /v1/sandbox/run"},
		{"bad idempotency key", req{path: "/v1/jobs", key: fullKey, body: `{"type":"sandbox.run","input":{}}`,
			header: map[string]string{"Idempotency-Key": "tab\there"}}, 400, "invalid_request", "Idempotency-Key"},
		{"missing scope", req{path: "/v1/jobs", key: ragOnlyKey, body: `{"type":"sandbox.run","input":{}}`}, 403, "forbidden", "jobs"},
		{"no key", req{path: "/v1/jobs", body: `{"type":"sandbox.run","input":{}}`}, 401, "unauthorized", "API key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.do(t, tc.q)
			env := readEnvelope(t, resp)
			if resp.StatusCode != tc.code || env.Error.Type != tc.typ || !strings.Contains(env.Error.Message, tc.msg) {
				t.Errorf("%d %+v, want %d %s containing %q", resp.StatusCode, env.Error, tc.code, tc.typ, tc.msg)
			}
		})
	}
	if n := h.jobRows(t); n != 0 {
		t.Errorf("%d jobs queued by refused requests", n)
	}
}

func TestJobOversizeBody(t *testing.T) {
	h := newJobsHarness(t, options{maxBody: 1024})
	resp := h.do(t, postJob(`{"type":"sandbox.run","input":{"code":"`+strings.Repeat("x", 64<<10)+`"}}`))
	if env := readEnvelope(t, resp); resp.StatusCode != 413 || env.Error.Type != "payload_too_large" {
		t.Errorf("%d %+v", resp.StatusCode, env.Error)
	}
	if n := h.jobRows(t); n != 0 {
		t.Errorf("%d jobs queued", n)
	}
}

func TestJobUpstreamCannotValidate(t *testing.T) {
	for name, handler := range map[string]http.HandlerFunc{
		"500":                func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) },
		"200 (ran the body)": echo("sandbox"),
	} {
		t.Run(name, func(t *testing.T) {
			h := newJobsHarness(t, options{sandbox: handler})
			resp := h.do(t, postJob(`{"type":"sandbox.run","input":{"code":"1"}}`))
			if env := readEnvelope(t, resp); resp.StatusCode != 502 || env.Error.Type != "upstream_error" {
				t.Errorf("%d %+v", resp.StatusCode, env.Error)
			}
			if n := h.jobRows(t); n != 0 {
				t.Errorf("%d jobs queued", n)
			}
		})
	}
}
