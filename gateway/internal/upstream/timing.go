package upstream

import (
	"context"
	"sync/atomic"
	"time"
)

// Timing accumulates how long a request spent waiting on upstreams, so that
// the gateway's own overhead can be told apart (Server-Timing, metrics). It
// is safe for concurrent use, as fan-out calls several upstreams at once.
type Timing struct {
	// Start is when the gateway received the request.
	Start    time.Time
	upstream atomic.Int64 // nanoseconds spent in upstream exchanges
}

type timingKey struct{}

// WithTiming returns a context carrying a new Timing that starts now.
func WithTiming(ctx context.Context) (context.Context, *Timing) {
	t := &Timing{Start: time.Now()}
	return context.WithValue(ctx, timingKey{}, t), t
}

// TimingFrom returns the request's Timing, or nil outside a timed request.
func TimingFrom(ctx context.Context) *Timing {
	t, _ := ctx.Value(timingKey{}).(*Timing)
	return t
}

// Upstream returns the time spent in upstream exchanges so far.
func (t *Timing) Upstream() time.Duration { return time.Duration(t.upstream.Load()) }

// Overhead is the time since Start not spent waiting on an upstream.
func (t *Timing) Overhead() time.Duration { return time.Since(t.Start) - t.Upstream() }

// Add records d of upstream time. Callers that wait on several upstreams at
// once add the wall time they waited, not the sum of the exchanges.
func (t *Timing) Add(d time.Duration) {
	if t != nil {
		t.upstream.Add(int64(d))
	}
}
