package server_test

import (
	"net/url"
	"testing"

	"trine/gateway/internal/config"
	"trine/gateway/internal/ratelimit"
	"trine/gateway/internal/redistest"
)

func TestTwoGatewaysShareOneLimitInRedis(t *testing.T) {
	redisURL := &url.URL{Scheme: "redis", Host: redistest.Start(t)}
	shared := func(l *config.Limits) {
		l.Default = ratelimit.Rule{Rate: 0.01, Burst: 3}
		l.RedisURL = redisURL
	}
	a, b := newHarness(t, options{limits: shared}), newHarness(t, options{limits: shared})
	var codes []int
	for _, h := range []*harness{a, b, a, b} {
		codes = append(codes, h.do(t, rag()).StatusCode)
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 200 || codes[3] != 429 {
		t.Errorf("statuses %v, want three admitted across both gateways, then 429", codes)
	}
}

func TestRedisDownFailureModes(t *testing.T) {
	// Nothing listens on port 1 of loopback.
	down := &url.URL{Scheme: "redis", Host: "127.0.0.1:1"}
	for mode, want := range map[ratelimit.FailureMode]int{ratelimit.FailOpen: 200, ratelimit.FailClosed: 503} {
		t.Run(string(mode), func(t *testing.T) {
			h := newHarness(t, options{limits: func(l *config.Limits) {
				l.RedisURL, l.FailureMode = down, mode
			}})
			resp := h.do(t, rag())
			if resp.StatusCode != want {
				t.Fatalf("status %d, want %d", resp.StatusCode, want)
			}
			if want == 503 {
				if env := readEnvelope(t, resp); env.Error.Type != "unavailable" || resp.Header.Get("Retry-After") == "" {
					t.Errorf("envelope %+v", env.Error)
				}
			}
		})
	}
}

func TestJobsInRedis(t *testing.T) {
	redisURL := &url.URL{Scheme: "redis", Host: redistest.Start(t)}
	shared := options{
		limits: func(l *config.Limits) { l.RedisURL = redisURL },
		jobs:   func(j *config.Jobs) { j.Backend = config.JobsBackendRedis },
	}
	a, b := newJobsHarness(t, shared), newJobsHarness(t, shared)
	q := postJob(`{"type":"sandbox.run","input":{"code":"1"}}`)
	q.header = map[string]string{"Idempotency-Key": "k"}
	first := enqueueOK(t, a, q)
	// Another gateway sees the same queue.
	if again := enqueueOK(t, b, q); again.ID != first.ID {
		t.Errorf("idempotent repeat on another gateway made %s, want %s", again.ID, first.ID)
	}
	if code, j := getJob(t, b, first.ID, fullKey); code != 200 || j.Status != "queued" || j.Type != "sandbox.run" {
		t.Errorf("%d %+v", code, j)
	}
	if code, _ := getJob(t, b, first.ID, noSecretKey); code != 404 {
		t.Errorf("another key's job: %d", code)
	}
}
