package server_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestAccessLogLine: the access log line of a relayed request carries
// every field, the request ID and the client's trace.
func TestAccessLogLine(t *testing.T) {
	h := newHarness(t, options{})
	q := rag()
	q.header = map[string]string{
		"X-Request-ID": "access-log-test",
		"Traceparent":  "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	}
	if resp := h.do(t, q); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var line map[string]any
	// The line is written after the response is complete.
	waitFor(t, "the access log line", func() bool {
		for _, l := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == "request" && rec["request_id"] == "access-log-test" {
				line = rec
				return true
			}
		}
		return false
	})
	want := map[string]any{
		"level": "INFO", "method": "POST", "path": "/v1/rag/query", "route": "POST /v1/rag/query",
		"status": 200.0, "key_id": "full", "trace_id": "0af7651916cd43dd8448eb211c80319c",
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %v, want %v", k, line[k], v)
		}
	}
	if ts, err := time.Parse(time.RFC3339Nano, line["time"].(string)); err != nil || time.Since(ts) > time.Minute {
		t.Errorf("time %v (%v)", line["time"], err)
	}
	d, _ := line["duration_ms"].(float64)
	u, _ := line["upstream_ms"].(float64)
	if b, _ := line["bytes"].(float64); b <= 0 || d <= 0 || u < 0 || u > d {
		t.Errorf("bytes %v, duration_ms %v, upstream_ms %v", line["bytes"], d, u)
	}
	if r, _ := line["remote"].(string); !strings.HasPrefix(r, "127.0.0.1:") {
		t.Errorf("remote %q", r)
	}
}
