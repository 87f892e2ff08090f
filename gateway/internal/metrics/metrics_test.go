package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	return string(body)
}

// TestResolvedSeries: the series resolved once per label set count exactly
// what resolving the labels on every call would.
func TestResolvedSeries(t *testing.T) {
	m := New()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				m.RequestStarted()
				m.RequestDone("POST /v1/rag/query", 200, time.Millisecond)
				m.RequestStarted()
				m.RequestDone("POST /v1/rag/query", 429, time.Millisecond)
				m.RequestStarted()
				m.RequestDone("unmatched", 404, time.Millisecond)
				m.UpstreamDone("ml-0", "success", time.Millisecond)
				m.RateLimitDecision("allowed")
			}
		})
	}
	wg.Wait()
	out := scrape(t, m)
	for _, want := range []string{
		`trine_gateway_requests_total{code="200",route="POST /v1/rag/query"} 800`,
		`trine_gateway_requests_total{code="429",route="POST /v1/rag/query"} 800`,
		`trine_gateway_requests_total{code="404",route="unmatched"} 800`,
		`trine_gateway_request_duration_seconds_count{route="POST /v1/rag/query"} 1600`,
		`trine_gateway_request_duration_seconds_count{route="unmatched"} 800`,
		`trine_gateway_upstream_duration_seconds_count{outcome="success",upstream="ml-0"} 800`,
		`trine_gateway_ratelimit_decisions_total{decision="allowed"} 800`,
		`trine_gateway_requests_in_flight 0`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("scrape lacks %s", want)
		}
	}
}

// TestResolvedSeriesAllocateNothing: once a label set has been seen,
// recording under it allocates nothing.
func TestResolvedSeriesAllocateNothing(t *testing.T) {
	m := New()
	record := func() {
		m.RequestStarted()
		m.RequestDone("POST /v1/rag/query", 200, time.Millisecond)
		m.UpstreamDone("ml-0", "success", time.Millisecond)
		m.RateLimitDecision("allowed")
	}
	record()
	if n := testing.AllocsPerRun(100, record); n != 0 {
		t.Errorf("%v allocations per request", n)
	}
}
