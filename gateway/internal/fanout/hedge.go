package fanout

import (
	"context"
	"errors"
	"net/http"
	"time"

	"trine/gateway/internal/httperr"
	"trine/gateway/internal/upstream"
)

// coldHedgeDelay is the hedge delay until enough latencies have been seen
// for a p95.
const coldHedgeDelay = 250 * time.Millisecond

// attempt is the outcome of one hedged call.
type attempt struct {
	target *upstream.Target
	ex     *upstream.Exchange
	err    error
}

// Delay is the current hedge delay: the configured one, else the p95 of
// recent latencies, never below the floor.
func (f *Runner) Delay() time.Duration {
	if f.HedgeDelay > 0 {
		return f.HedgeDelay
	}
	p95, ok := f.Latencies.P95()
	if !ok {
		p95 = coldHedgeDelay
	}
	return max(p95, f.MinHedgeDelay)
}

// Hedge sends c to one replica and, if no answer has come after Delay (or
// the first attempt failed), to a second one. The first usable answer (any
// status below 500) is relayed; the other call is cancelled, which the
// upstream sees as a client disconnect.
func (f *Runner) Hedge(w http.ResponseWriter, r *http.Request, c upstream.Call) error {
	ctx, cancel := context.WithTimeout(r.Context(), c.Timeout)
	defer cancel()
	first := f.Pool.Pick(nil)
	if first == nil {
		return httperr.Unavailable("no healthy "+f.Pool.Name+" service is available", time.Second,
			errors.New("hedge: no replica available"))
	}
	start := time.Now()
	results := make(chan attempt, 2)
	cancels := map[*upstream.Target]context.CancelFunc{}
	launch := func(t *upstream.Target) {
		actx, acancel := context.WithCancel(ctx)
		cancels[t] = acancel
		go func() {
			ex, err := f.Proxy.OpenOn(actx, r, c, t)
			results <- attempt{target: t, ex: ex, err: err}
		}()
	}
	launch(first)
	pending, hedged := 1, false
	hedge := func() {
		hedged = true
		if second := f.Pool.Pick([]*upstream.Target{first}); second != nil {
			launch(second)
			pending++
		}
	}
	timer := time.NewTimer(f.Delay())
	defer timer.Stop()
	var winner, failed *attempt
	for pending > 0 && winner == nil {
		select {
		case <-timer.C:
			if !hedged {
				hedge()
			}
		case a := <-results:
			pending--
			switch {
			case a.err == nil && a.ex.Resp.StatusCode < 500:
				winner = &a
			default:
				if failed != nil && failed.ex != nil {
					failed.ex.Close()
				}
				failed = &a
				if !hedged {
					hedge()
				}
			}
		}
	}
	// Cancel the loser and release whatever it returns, in the background
	// so that relaying the winner does not wait for it.
	for t, c := range cancels {
		if winner == nil || t != winner.target {
			c()
		}
	}
	go func() {
		for ; pending > 0; pending-- {
			if a := <-results; a.ex != nil {
				a.ex.Close()
			}
		}
	}()
	if timing := upstream.TimingFrom(r.Context()); timing != nil {
		defer func() { timing.Add(time.Since(start)) }()
	}
	switch {
	case winner != nil:
		if failed != nil && failed.ex != nil {
			failed.ex.Close()
		}
		return winner.ex.Relay(w, r)
	case failed.ex != nil:
		// Relay turns the upstream's failure into the client's error.
		return failed.ex.Relay(w, r)
	default:
		return failed.err
	}
}
