package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"trine/gateway/internal/httperr"
)

func testPool(n int) *Pool {
	var ts []*Target
	for i := range n {
		u, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", 9000+i))
		t := NewTarget(fmt.Sprintf("r%d", i), u)
		t.setHealth(nil)
		ts = append(ts, t)
	}
	return NewPool("test", ts...)
}

func names(ts []*Target) string {
	s := ""
	for _, t := range ts {
		s += t.Name
	}
	return s
}

func TestCandidates(t *testing.T) {
	p := testPool(3)
	tests := []struct {
		name    string
		down    []int
		want    []string // successive calls
		healthy bool
	}{
		{"rotates over all", nil, []string{"r0r1r2", "r1r2r0", "r2r0r1", "r0r1r2"}, true},
		{"skips the unhealthy", []int{1}, []string{"r0r2", "r2r0", "r0r2"}, true},
		{"none healthy", []int{0, 1, 2}, []string{"", ""}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, tg := range p.targets {
				tg.setHealth(nil)
			}
			for _, i := range tc.down {
				p.targets[i].setHealth(errors.New("down"))
			}
			p.next.Store(0)
			for i, want := range tc.want {
				if got := names(p.candidates()); got != want {
					t.Errorf("call %d: %q, want %q", i, got, want)
				}
			}
			if p.AnyHealthy() != tc.healthy {
				t.Errorf("AnyHealthy = %v", !tc.healthy)
			}
		})
	}
}

func TestNewTargetStartsUnhealthy(t *testing.T) {
	u, _ := url.Parse("http://x")
	if s := NewTarget("x", u).Status(); s.Healthy || s.LastError == "" {
		t.Errorf("status %+v", s)
	}
}

func TestParseEnvelope(t *testing.T) {
	tests := []struct {
		raw      string
		wantType string
		ok       bool
	}{
		{`{"error":{"type":"invalid_request","message":"m","request_id":"r"}}`, "invalid_request", true},
		{`{"error":{"type":"invalid_request","message":""}}`, "", false},
		{`{"error":{"type":"","message":"m"}}`, "", false},
		{`{"error":{"type":"Not-Ours","message":"m"}}`, "", false},
		{`{"error":"string"}`, "", false},
		{`{"detail":"fastapi default"}`, "", false},
		{`not json`, "", false},
		{``, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.raw, func(t *testing.T) {
			typ, _, ok := parseEnvelope([]byte(tc.raw))
			if ok != tc.ok || typ != tc.wantType {
				t.Errorf("got %q %v, want %q %v", typ, ok, tc.wantType, tc.ok)
			}
		})
	}
}

func TestParseEnvelopeCapsMessage(t *testing.T) {
	// "é" is two bytes straddling the cut.
	long := strings.Repeat("x", maxPassedMessage-1) + "é" + strings.Repeat("x", 100)
	_, msg, ok := parseEnvelope([]byte(`{"error":{"type":"t","message":"` + long + `"}}`))
	if !ok || len(msg) > maxPassedMessage {
		t.Fatalf("ok=%v len=%d", ok, len(msg))
	}
	for _, r := range msg {
		if r == '\uFFFD' {
			t.Fatal("message ends in a broken UTF-8 sequence")
		}
	}
}

func TestRetryAfter(t *testing.T) {
	tests := map[string]time.Duration{"": time.Second, "5": 5 * time.Second, "0": time.Second, "-3": time.Second,
		"abc": time.Second, "99999": time.Second, "Wed, 21 Oct 2015 07:28:00 GMT": time.Second}
	for in, want := range tests {
		if got := retryAfter(in); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestClassify(t *testing.T) {
	live := context.Background()
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	tg := &Target{Name: "r0"}
	tests := []struct {
		name     string
		client   context.Context
		err      error
		wantCode int
	}{
		{"client gone wins", gone, context.DeadlineExceeded, httperr.StatusClientClosedRequest},
		{"route deadline", live, fmt.Errorf("wrapped: %w", context.DeadlineExceeded), http.StatusGatewayTimeout},
		{"network timeout", live, os.ErrDeadlineExceeded, http.StatusGatewayTimeout},
		{"anything else", live, errors.New("connection reset by peer"), http.StatusBadGateway},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			he := classify(tc.client, tg, tc.err)
			if he.Code != tc.wantCode {
				t.Errorf("code %d, want %d", he.Code, tc.wantCode)
			}
			if he.Msg == tc.err.Error() {
				t.Error("internal error text used as the client message")
			}
		})
	}
}
