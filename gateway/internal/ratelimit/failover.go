package ratelimit

import "context"

// FailureMode says what happens to requests when the shared limiter cannot
// decide (Redis unreachable or failing).
type FailureMode string

const (
	// FailOpen admits requests under each gateway's in-process limit alone,
	// so an outage of Redis does not become an outage of the API.
	FailOpen FailureMode = "open"
	// FailClosed refuses requests (503) until Redis answers again.
	FailClosed FailureMode = "closed"
)

// Failover is a shared limiter with a fallback for when it fails.
type Failover struct {
	shared Limiter
	local  Limiter
	mode   FailureMode
	// onError is told about every failure of the shared limiter.
	onError func(ctx context.Context, err error)
}

// NewFailover returns a limiter that asks shared and, when shared fails,
// falls back to local (FailOpen) or returns the error (FailClosed).
func NewFailover(shared, local Limiter, mode FailureMode, onError func(context.Context, error)) *Failover {
	return &Failover{shared: shared, local: local, mode: mode, onError: onError}
}

// Allow implements Limiter.
func (f *Failover) Allow(ctx context.Context, key string, rule Rule) (Decision, error) {
	d, err := f.shared.Allow(ctx, key, rule)
	if err == nil {
		return d, nil
	}
	f.onError(ctx, err)
	if f.mode == FailClosed {
		return Decision{}, err
	}
	return f.local.Allow(ctx, key, rule)
}
