package server

import (
	"encoding/json"
	"slices"
	"testing"

	"trine/gateway/internal/jobs"
)

// FuzzParseJobRequest checks that whatever a client sends as a job request,
// it is either refused or yields a known type, an object input and, when
// present, a non-empty webhook URL, and that the input is exactly the bytes
// the client sent for it.
func FuzzParseJobRequest(f *testing.F) {
	f.Add([]byte(`{"type":"rag.query","input":{"query":"q"}}`))
	f.Add([]byte(`{"type":"ingest","input":{"collection":"c","documents":[]},"webhook_url":"https://x"}`))
	f.Add([]byte(`{"type":"sandbox.run","input":[1]}`))
	f.Add([]byte(`{"type":"sandbox.run","input":{},"extra":1}`))
	f.Add([]byte(`{"type":"sandbox.run","input":{}} {}`))
	f.Add([]byte(`{"type":"rag.query","input":null,"webhook_url":""}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseJobRequest(body)
		if err != nil {
			return
		}
		if !slices.Contains(jobs.Types, req.Type) || !isObject(req.Input) || !json.Valid(req.Input) {
			t.Fatalf("accepted %q as %+v", body, req)
		}
		if req.WebhookURL != nil && *req.WebhookURL == "" {
			t.Fatalf("accepted an empty webhook_url: %q", body)
		}
		var again map[string]json.RawMessage
		if err := json.Unmarshal(body, &again); err != nil || string(again["input"]) != string(req.Input) {
			t.Fatalf("input %q is not the client's %q", req.Input, again["input"])
		}
	})
}
