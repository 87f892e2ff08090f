package jobs

import (
	"math/rand/v2"
	"time"
)

// maxRetryDelay caps the wait before a job's retry (api/jobs.md).
const maxRetryDelay = 5 * time.Minute

// retryJitter returns a random factor in [-0.2, 0.2]: a retry waits its
// delay ± 20 %, so jobs failed together do not come back together.
func retryJitter() float64 {
	return (rand.Float64()*2 - 1) * 0.2
}

// retryDelayMS is min(2^attempts s, 5 min) scaled by 1 + jitter, in ms.
func retryDelayMS(attempts int, jitter float64) int64 {
	d := maxRetryDelay
	if attempts < 20 {
		d = min(time.Duration(1<<attempts)*time.Second, maxRetryDelay)
	}
	return int64(float64(d.Milliseconds()) * (1 + jitter))
}

// Backoff is the webhook retry policy: exponential with full jitter,
// given up once the next attempt would fall outside the window.
type Backoff struct {
	// Initial is the cap of the first retry's wait; each retry doubles it.
	Initial time.Duration
	// Max caps the wait between attempts.
	Max time.Duration
	// Window is how long after the delivery was created retries go on.
	Window time.Duration
}

// Next returns when to try again after the given number of failed attempts
// of a delivery created at created, and false when the window is over.
func (b Backoff) Next(now, created time.Time, failed int) (time.Time, bool) {
	ceiling := b.Max
	if failed <= 30 {
		if d := b.Initial << (failed - 1); d > 0 && d < b.Max {
			ceiling = d
		}
	}
	wait := time.Duration(rand.Int64N(int64(ceiling) + 1)) // full jitter: [0, ceiling]
	next := now.Add(wait)
	if next.After(created.Add(b.Window)) {
		return time.Time{}, false
	}
	return next, true
}
