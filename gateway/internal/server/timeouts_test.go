package server_test

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"trine/gateway/internal/config"
)

func TestFirstByteTimeout(t *testing.T) {
	cancelled := make(chan struct{}, 1)
	silent := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(10 * time.Second):
		}
	}
	h := newHarness(t, options{ml: []http.HandlerFunc{silent}, upstream: func(u *config.Upstream) {
		u.RAGFirstByteTimeout = 100 * time.Millisecond
	}})
	resp := h.do(t, rag())
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", resp.StatusCode)
	}
	if env := readEnvelope(t, resp); env.Error.Type != "upstream_timeout" {
		t.Errorf("type %q", env.Error.Type)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Error("the upstream call was not cancelled at the first-byte timeout")
	}
}

func TestFirstByteTimeoutDoesNotCutStreams(t *testing.T) {
	// Headers come at once, the body slowly: only the total timeout applies.
	slowBody := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		time.Sleep(300 * time.Millisecond)
		_, _ = w.Write([]byte("event: done\ndata: {}\n\n"))
	}
	h := newHarness(t, options{ml: []http.HandlerFunc{slowBody}, upstream: func(u *config.Upstream) {
		u.RAGFirstByteTimeout = 100 * time.Millisecond
	}})
	resp := h.do(t, rag())
	if got := body(t, resp); resp.StatusCode != 200 || got != "event: done\ndata: {}\n\n" {
		t.Fatalf("status %d body %q", resp.StatusCode, got)
	}
}

func TestServerTiming(t *testing.T) {
	h := newHarness(t, options{})
	resp := h.do(t, rag())
	st := resp.Header.Get("Server-Timing")
	var gw, up float64
	if n, err := fmt.Sscanf(st, "gw;dur=%f, upstream;dur=%f", &gw, &up); err != nil || n != 2 || gw < 0 || up <= 0 {
		t.Errorf("Server-Timing %q", st)
	}
	// Answers the gateway writes itself carry its time too.
	anon := rag()
	anon.key = ""
	if st := h.do(t, anon).Header.Get("Server-Timing"); len(st) < len("gw;dur=0") || st[:7] != "gw;dur=" {
		t.Errorf("401 Server-Timing %q", st)
	}
	if _, err := strconv.ParseFloat(h.do(t, anon).Header.Get("Server-Timing")[7:], 64); err != nil {
		t.Error(err)
	}
}
