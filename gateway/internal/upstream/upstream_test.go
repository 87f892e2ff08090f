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
	return NewPool("test", Ejection{After: 3, For: time.Hour}, ts...)
}

func TestPickPrefersFewerInFlight(t *testing.T) {
	p := testPool(2)
	p.targets[0].inFlight.Store(5)
	// With two replicas both are always compared, so the idle one wins.
	for range 20 {
		if got := p.Pick(nil); got != p.targets[1] {
			t.Fatalf("picked %s with %d in flight", got.Name, got.inFlight.Load())
		}
	}
}

func TestPickSpreadsAndSkips(t *testing.T) {
	p := testPool(3)
	p.targets[1].setHealth(errors.New("down"))
	counts := map[string]int{}
	for range 300 {
		counts[p.Pick(nil).Name]++
	}
	if counts["r1"] != 0 || counts["r0"] < 50 || counts["r2"] < 50 {
		t.Errorf("picks %v", counts)
	}
	if got := p.Pick([]*Target{p.targets[0], p.targets[2]}); got != nil {
		t.Errorf("picked %s although every available replica was tried", got.Name)
	}
	for _, tg := range p.targets {
		tg.setHealth(errors.New("down"))
	}
	if p.Pick(nil) != nil || p.AnyHealthy() {
		t.Error("picked from an all-unhealthy pool")
	}
}

func TestEjectionAndHalfOpen(t *testing.T) {
	p := testPool(1)
	tg := p.targets[0]
	now := time.Now()
	policy := Ejection{After: 3, For: time.Minute}
	for i := range 2 {
		if tg.record(Failure, policy, now) {
			t.Fatalf("ejected after %d failures", i+1)
		}
	}
	tg.record(Success, policy, now) // a success resets the count
	tg.record(Failure, policy, now)
	tg.record(Failure, policy, now)
	tg.record(NoVerdict, policy, now) // client cancellations do not count
	if !tg.record(Failure, policy, now) {
		t.Fatal("not ejected after 3 consecutive failures")
	}
	if tg.available(now.Add(time.Second), false) || !tg.Status().Ejected {
		t.Error("ejected target still available")
	}
	later := now.Add(2 * time.Minute)
	if !tg.available(later, true) {
		t.Fatal("no probe allowed after the ejection period")
	}
	if tg.available(later, true) {
		t.Error("a second concurrent probe was allowed")
	}
	// A failed probe ejects again at once.
	if !tg.record(Failure, policy, later) || tg.available(later.Add(time.Second), false) {
		t.Error("failed probe did not eject again")
	}
	evenLater := later.Add(2 * time.Minute)
	tg.available(evenLater, true)
	tg.record(Success, policy, evenLater)
	if !tg.available(evenLater, false) || tg.Status().Ejected {
		t.Error("successful probe did not bring the target back")
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

// TestCanonicalHeaders: the header names copied by direct map access are
// the canonical forms that Header.Set would store.
func TestCanonicalHeaders(t *testing.T) {
	for _, k := range append(append([]string(nil), forwardedHeaders...), relayedHeaders...) {
		if c := http.CanonicalHeaderKey(k); c != k {
			t.Errorf("%q is not canonical (%q)", k, c)
		}
	}
}
