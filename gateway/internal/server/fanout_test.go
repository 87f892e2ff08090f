package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// answer replies like the ML service with a fixed answer.
func answer(text string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"answer":"` + text + `","sources":[1,0],"passages":[],"provider":"extractive"}`))
	}
}

type fanoutBody struct {
	Results []struct {
		ServiceID string          `json:"service_id"`
		Answer    *string         `json:"answer"`
		Sources   json.RawMessage `json:"sources"`
		LatencyMS *float64        `json:"latency_ms"`
		Error     *struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	} `json:"results"`
}

func TestFanoutAll(t *testing.T) {
	broken := func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) }
	stuck := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	h := newHarness(t, options{
		ml:         []http.HandlerFunc{answer("zero"), broken, answer("two"), stuck},
		ragTimeout: 500 * time.Millisecond,
	})
	q := rag()
	q.body = `{"query":"q","documents":["a","b"],"fanout":"all"}`
	resp := h.do(t, q)
	raw := body(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, raw)
	}
	var got fanoutBody
	if err := json.Unmarshal([]byte(raw), &got); err != nil || len(got.Results) != 4 {
		t.Fatalf("body %s", raw)
	}
	byID := map[string]int{}
	for i, r := range got.Results {
		byID[r.ServiceID] = i
		if r.LatencyMS == nil || *r.LatencyMS < 0 {
			t.Errorf("%s: latency_ms %v", r.ServiceID, r.LatencyMS)
		}
	}
	for id, want := range map[string]string{"ml-0": "zero", "ml-2": "two"} {
		r := got.Results[byID[id]]
		if r.Answer == nil || *r.Answer != want || string(r.Sources) != "[1,0]" || r.Error != nil {
			t.Errorf("%s: %+v", id, r)
		}
	}
	for id, wantType := range map[string]string{"ml-1": "upstream_error", "ml-3": "upstream_timeout"} {
		r := got.Results[byID[id]]
		if r.Error == nil || r.Error.Type != wantType || r.Answer != nil {
			t.Errorf("%s: %+v, want error %s", id, r, wantType)
		}
	}
	// Each replica got the body as the client sent it.
	for i, f := range h.ml {
		if s := f.seen(); len(s) != 1 || s[0].Body != q.body {
			t.Errorf("ml-%d saw %+v", i, s)
		}
	}
}

func TestFanoutHedge(t *testing.T) {
	cancelled := make(chan struct{}, 100)
	slow := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(10 * time.Second):
		}
	}
	h := newHarness(t, options{ml: []http.HandlerFunc{slow, answer("fast")}})
	q := rag()
	q.body = `{"query":"q","documents":["a"],"fanout":"hedge"}`
	// The first replica is drawn at random; when it is the fast one there
	// is nothing to hedge. Repeat until the slow one was tried first.
	for i := 0; len(h.ml[0].seen()) == 0; i++ {
		if i == 100 {
			t.Fatal("the slow replica was never chosen first")
		}
		resp := h.do(t, q)
		if got := body(t, resp); resp.StatusCode != 200 || !strings.Contains(got, `"answer":"fast"`) {
			t.Fatalf("status %d: %s", resp.StatusCode, got)
		}
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the slow replica's call was not cancelled after the fast one answered")
	}
}

func TestFanoutHedgeFirstFails(t *testing.T) {
	broken := func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) }
	h := newHarness(t, options{ml: []http.HandlerFunc{broken, answer("ok")}})
	q := rag()
	q.body = `{"query":"q","documents":["a"],"fanout":"hedge"}`
	for range 10 {
		resp := h.do(t, q)
		if got := body(t, resp); resp.StatusCode != 200 || !strings.Contains(got, `"answer":"ok"`) {
			t.Fatalf("status %d: %s", resp.StatusCode, got)
		}
	}
}

func TestFanoutInvalid(t *testing.T) {
	h := newHarness(t, options{})
	for _, b := range []string{
		`{"query":"q","fanout":"some"}`,
		`{"query":"q","fanout":1}`,
		`{"query":"q","fanout":null,"stream":"yes"}`,
		`{"query":"q","fanout":"all","stream":true}`,
	} {
		q := rag()
		q.body = b
		resp := h.do(t, q)
		if resp.StatusCode != 400 {
			t.Errorf("%s: status %d", b, resp.StatusCode)
			continue
		}
		readEnvelope(t, resp)
	}
	if n := len(h.ml[0].seen()); n != 0 {
		t.Errorf("invalid queries reached the upstream %d times", n)
	}
}
