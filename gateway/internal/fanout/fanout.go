package fanout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"trine/gateway/internal/httperr"
	"trine/gateway/internal/upstream"
)

// maxAnswerBytes caps one replica's answer when all answers are collected
// into one response.
const maxAnswerBytes = 8 << 20

// Runner sends RAG queries to several replicas of the ML service.
type Runner struct {
	// Proxy makes the upstream calls.
	Proxy *upstream.Proxy
	// Pool holds the ML replicas.
	Pool *upstream.Pool
	// Latencies feeds the automatic hedge delay.
	Latencies *Latencies
	// HedgeDelay is a fixed hedge delay; zero means the observed p95.
	HedgeDelay time.Duration
	// MinHedgeDelay is the floor of the automatic delay: hedging sooner
	// would double the load for little gain.
	MinHedgeDelay time.Duration
}

// ErrorBody is a failed replica's error in a fan-out result.
type ErrorBody struct {
	// Type and Message are as in the error envelope.
	Type    string `json:"type"`
	Message string `json:"message"`
}

// Result is one replica's entry in a fan-out answer.
type Result struct {
	ServiceID string          `json:"service_id"`
	Answer    *string         `json:"answer"`
	Sources   json.RawMessage `json:"sources"`
	LatencyMS float64         `json:"latency_ms"`
	Error     *ErrorBody      `json:"error"`
}

// All sends c to every available replica in parallel, under c.Timeout for
// them all, and answers 200 with one result per replica; a replica that
// fails has its error set and does not fail the others.
func (f *Runner) All(w http.ResponseWriter, r *http.Request, c upstream.Call) error {
	targets := f.Pool.Available()
	if len(targets) == 0 {
		return httperr.Unavailable("no healthy "+f.Pool.Name+" service is available", time.Second,
			errors.New("fan-out: no replica available"))
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.Timeout)
	defer cancel()
	results := make([]Result, len(targets))
	start := time.Now()
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = f.one(ctx, r, c, t)
		}()
	}
	wg.Wait()
	if timing := upstream.TimingFrom(r.Context()); timing != nil {
		timing.Add(time.Since(start))
	}
	if err := r.Context().Err(); err != nil {
		return httperr.ClientClosed(err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	// An error here means the client left; there is no one to tell.
	_ = json.NewEncoder(w).Encode(struct {
		Results []Result `json:"results"`
	}{results})
	return nil
}

// one asks replica t and turns the outcome into its result entry.
func (f *Runner) one(ctx context.Context, r *http.Request, c upstream.Call, t *upstream.Target) Result {
	start := time.Now()
	res := Result{ServiceID: t.Name}
	data, err := f.read(ctx, r, c, t)
	res.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
	if err == nil {
		var answer struct {
			Answer  *string         `json:"answer"`
			Sources json.RawMessage `json:"sources"`
		}
		if err = json.Unmarshal(data, &answer); err == nil && answer.Answer != nil {
			res.Answer, res.Sources = answer.Answer, answer.Sources
			return res
		}
		err = httperr.Wrap(http.StatusBadGateway, httperr.TypeUpstreamError, "the upstream service failed",
			fmt.Errorf("%s: answer without the expected fields: %v", t.Name, err))
	}
	he := httperr.As(err)
	res.Error = &ErrorBody{Type: he.Type, Message: he.Msg}
	return res
}

func (f *Runner) read(ctx context.Context, r *http.Request, c upstream.Call, t *upstream.Target) ([]byte, error) {
	ex, err := f.Proxy.OpenOn(ctx, r, c, t)
	if err != nil {
		return nil, err
	}
	return ex.ReadAll(r.Context(), maxAnswerBytes)
}
