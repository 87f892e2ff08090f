package fanout

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"trine/gateway/internal/httperr"
)

func TestParseMode(t *testing.T) {
	tests := []struct {
		body string
		want Mode
		ok   bool
	}{
		{`{"query":"q"}`, Single, true},
		{`{"fanout":null}`, Single, true},
		{`{"fanout":"all"}`, All, true},
		{`{"fanout":"all","stream":false}`, All, true},
		{`{"fanout":"hedge","stream":true}`, Hedge, true},
		{`{"fanout":"ALL"}`, Single, false},
		{`{"fanout":["all"]}`, Single, false},
		{`{"fanout":"all","stream":true}`, Single, false},
		{`{"stream":1}`, Single, false},
		// Names match as decoding matches them, whatever the scan in
		// front of it passes over.
		{`{"FanOut":"all"}`, All, true},
		{`{"\u0066anout":"hedge"}`, Hedge, true},
		{`{"ſtream":1}`, Single, false},
		{`{"STREAM":"yes"}`, Single, false},
		{`{"query":"no such member","nested":{"fanout":1}}`, Single, true},
	}
	for _, tc := range tests {
		t.Run(tc.body, func(t *testing.T) {
			m, err := ParseMode([]byte(tc.body))
			if (err == nil) != tc.ok || m != tc.want {
				t.Fatalf("mode %q err %v", m, err)
			}
			var he *httperr.Error
			if err != nil && (!errors.As(err, &he) || he.Code != 400) {
				t.Errorf("error %v is not a 400", err)
			}
		})
	}
}

func TestLatenciesP95(t *testing.T) {
	var l Latencies
	if _, ok := l.P95(); ok {
		t.Error("p95 of nothing")
	}
	for i := 1; i <= 100; i++ {
		l.Observe(time.Duration(i) * time.Millisecond)
	}
	if p, ok := l.P95(); !ok || p != 95*time.Millisecond {
		t.Errorf("p95 %v", p)
	}
	// The window keeps only recent values.
	for range latencyWindow {
		l.Observe(time.Millisecond)
	}
	if p, _ := l.P95(); p != time.Millisecond {
		t.Errorf("p95 after the window moved: %v", p)
	}
}

func TestDelay(t *testing.T) {
	r := &Runner{Latencies: &Latencies{}, MinHedgeDelay: 20 * time.Millisecond}
	if d := r.Delay(); d != coldHedgeDelay {
		t.Errorf("cold delay %v", d)
	}
	for range 50 {
		r.Latencies.Observe(time.Millisecond)
	}
	if d := r.Delay(); d != 20*time.Millisecond {
		t.Errorf("delay %v, want the floor", d)
	}
	r.HedgeDelay = time.Second
	if d := r.Delay(); d != time.Second {
		t.Errorf("fixed delay %v", d)
	}
}

func FuzzParseMode(f *testing.F) {
	f.Add(`{"fanout":"all"}`)
	f.Add(`{"fanout":"hedge","stream":true}`)
	f.Add(`{"fanout":1}`)
	f.Add(`{"ſtream":1}`)
	f.Fuzz(func(t *testing.T, body string) {
		m, err := ParseMode([]byte(body))
		// Passing over a body must give what decoding it gives.
		if obj := strings.HasPrefix(strings.TrimSpace(body), "{"); obj && json.Valid([]byte(body)) && !mayName([]byte(body)) {
			if dm, derr := decodeMode([]byte(body)); dm != Single || derr != nil {
				t.Errorf("passed over a body that decodes to %q, %v", dm, derr)
			}
		}
		if err == nil && m != Single && m != All && m != Hedge {
			t.Errorf("unknown mode %q accepted", m)
		}
		var he *httperr.Error
		if err != nil && (!errors.As(err, &he) || he.Code != 400) {
			t.Errorf("error %v is not a 400", err)
		}
	})
}
