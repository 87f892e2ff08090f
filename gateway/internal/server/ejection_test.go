package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

func TestFailingReplicaEjected(t *testing.T) {
	failing := func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}
	h := newHarness(t, options{ml: []http.HandlerFunc{failing, echo("ml-1")}})
	// EjectAfter is 3 in tests: after three 5xx answers ml-0 gets nothing.
	for i := 0; len(h.ml[0].seen()) < 3; i++ {
		if i == 200 {
			t.Fatal("ml-0 was never tried three times")
		}
		h.do(t, rag())
	}
	for range 20 {
		if resp := h.do(t, rag()); resp.StatusCode != 200 {
			t.Fatalf("status %d after ejection", resp.StatusCode)
		}
	}
	if n := len(h.ml[0].seen()); n != 3 {
		t.Errorf("ejected ml-0 got %d requests, want 3", n)
	}
	text := body(t, h.do(t, req{method: "GET", path: "/metrics"}))
	if !strings.Contains(text, `trine_gateway_upstream_ejected{upstream="ml-0"} 1`) {
		t.Error("metrics do not show ml-0 ejected")
	}
	if !strings.Contains(text, `trine_gateway_upstream_duration_seconds_count{outcome="failure",upstream="ml-0"} 3`) {
		t.Error("metrics do not count ml-0's failures")
	}
}

func TestClientCancelIsNotAFailure(t *testing.T) {
	arrived := make(chan struct{}, 8)
	slow := func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
	}
	h := newHarness(t, options{ml: []http.HandlerFunc{slow}})
	for range 5 { // more than EjectAfter
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
		cancel()
		<-errc
	}
	waitFor(t, "five no-verdict exchanges", func() bool {
		text := body(t, h.do(t, req{method: "GET", path: "/metrics"}))
		return strings.Contains(text, `trine_gateway_upstream_duration_seconds_count{outcome="no_verdict",upstream="ml-0"} 5`)
	})
	ready := body(t, h.do(t, req{method: "GET", path: "/readyz"}))
	if !strings.Contains(ready, `"ejected":false`) || strings.Contains(ready, `"ejected":true`) {
		t.Errorf("client cancellations ejected the replica: %s", ready)
	}
}
