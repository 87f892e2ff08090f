// Package ratelimit decides whether a request may proceed: a GCRA rate limit
// (requests per second with a burst) kept in process or in Redis, shared by
// every gateway replica, and a per-key cap on concurrent requests.
//
// GCRA (the generic cell rate algorithm) stores one timestamp per limited
// key, the theoretical arrival time (TAT) of the next request at the
// sustained rate. A request is admitted when admitting it would not push
// the TAT more than burst emission intervals past now. It needs no timer and
// no background refill, and in Redis a single atomic script.
package ratelimit

import (
	"context"
	"math"
	"time"
)

// Rule is a rate limit: Rate requests per second sustained, and up to Burst
// requests at once after a quiet period.
type Rule struct {
	// Rate is the sustained rate in requests per second; it must be > 0.
	Rate float64
	// Burst is how many requests may be admitted at once; it must be >= 1.
	Burst int
}

// interval is the time one request uses up at the sustained rate.
func (r Rule) interval() time.Duration {
	return time.Duration(math.Max(1, float64(time.Second)/r.Rate))
}

// tolerance is how far the TAT may run ahead of now.
func (r Rule) tolerance() time.Duration {
	return r.interval() * time.Duration(r.Burst)
}

// Decision is the outcome of one check, with what the RateLimit-* headers
// report.
type Decision struct {
	// Allowed reports whether the request may proceed.
	Allowed bool
	// Limit is the burst size, the most requests ever admitted at once.
	Limit int
	// Remaining is how many more requests would be admitted right now.
	Remaining int
	// Reset is the time until the limit is fully replenished.
	Reset time.Duration
	// RetryAfter is, for a refused request, when one would be admitted.
	RetryAfter time.Duration
}

// Limiter checks a rule for a key. Implementations are safe for concurrent
// use.
type Limiter interface {
	// Allow counts a request against key under rule and reports the
	// decision. An error means no decision could be made.
	Allow(ctx context.Context, key string, rule Rule) (Decision, error)
}

// gcra applies one request to the stored TAT (zero when absent) at now. It
// returns the decision and the TAT to store when the request is admitted.
func gcra(tat, now time.Time, rule Rule) (Decision, time.Time) {
	interval, tolerance := rule.interval(), rule.tolerance()
	if tat.Before(now) {
		tat = now
	}
	newTAT := tat.Add(interval)
	allowAt := newTAT.Add(-tolerance)
	if now.Before(allowAt) {
		return Decision{Limit: rule.Burst, Reset: tat.Sub(now), RetryAfter: allowAt.Sub(now)}, tat
	}
	ahead := newTAT.Sub(now)
	return Decision{
		Allowed:   true,
		Limit:     rule.Burst,
		Remaining: int((tolerance - ahead) / interval),
		Reset:     ahead,
	}, newTAT
}
