// Package upstream knows the internal services behind the gateway: their
// replicas and health (Target, Pool, Checker) and how a public request is
// relayed to one of them (Proxy).
package upstream

import (
	"math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Target is one instance of an internal service together with its health as
// seen by the active checker and by the outcome of proxied requests.
type Target struct {
	// Name identifies the target in logs, metrics and /readyz (ml-0, sandbox).
	Name string
	// URL is the base URL that request paths are appended to.
	URL *url.URL

	inFlight atomic.Int64 // requests being proxied to the target

	mu      sync.Mutex // guards every field below
	checked bool       // whether any health verdict has been recorded yet
	healthy bool       // the active checker's verdict
	lastErr string
	// Passive health: consecutive failed requests, and while ejected, the
	// time traffic may resume with a single probe request (half-open).
	failures     int
	ejectedUntil time.Time
	probing      bool
}

// NewTarget returns a target that counts as unhealthy until its first
// successful health check, so no traffic goes to an instance nobody has seen.
func NewTarget(name string, u *url.URL) *Target {
	return &Target{Name: name, URL: u, lastErr: "not checked yet"}
}

// Status is a snapshot of a target's health, shaped for /readyz.
type Status struct {
	// Name is the target's name.
	Name string `json:"name"`
	// URL is the target's base URL.
	URL string `json:"url"`
	// Healthy reports whether the target passes active health checks.
	Healthy bool `json:"healthy"`
	// Ejected reports whether recent requests failed so often that the
	// target gets no traffic for now.
	Ejected bool `json:"ejected"`
	// InFlight is the number of requests being proxied to the target.
	InFlight int64 `json:"in_flight"`
	// LastError is why the target is unhealthy, or "" when it is healthy.
	LastError string `json:"last_error"`
}

// Healthy reports whether the target passes active health checks.
func (t *Target) Healthy() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.healthy
}

// InFlight returns the number of requests being proxied to the target.
func (t *Target) InFlight() int64 { return t.inFlight.Load() }

// Status returns a snapshot of the target's health.
func (t *Target) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Status{Name: t.Name, URL: t.URL.String(), Healthy: t.healthy, Ejected: !t.ejectedUntil.IsZero(),
		InFlight: t.inFlight.Load(), LastError: t.lastErr}
}

// setHealth records the outcome of a check (err == nil means healthy) and
// reports whether the health changed; the first verdict always counts as a
// change, so that start-up logs say how every upstream was found.
func (t *Target) setHealth(err error) (changed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	changed = !t.checked || t.healthy != (err == nil)
	t.checked = true
	t.healthy = err == nil
	t.lastErr = ""
	if err != nil {
		t.lastErr = err.Error()
	}
	return changed
}

// available reports whether the target may take a request now. An ejected
// target whose ejection has run out takes exactly one probe request at a
// time; claim says whether this call takes that probe slot.
func (t *Target) available(now time.Time, claim bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.healthy {
		return false
	}
	if t.ejectedUntil.IsZero() {
		return true
	}
	if now.Before(t.ejectedUntil) || t.probing {
		return false
	}
	if claim {
		t.probing = true
	}
	return true
}

// Ejection is the passive health policy of a pool.
type Ejection struct {
	// After this many consecutive failed requests a target is ejected.
	After int
	// For this long an ejected target gets no traffic; then single probe
	// requests decide whether it comes back.
	For time.Duration
}

// Outcome is what a proxied request says about its target's health.
type Outcome int

const (
	// Success: the target answered (any status below 500).
	Success Outcome = iota
	// Failure: the target could not be reached, timed out or answered 5xx.
	Failure
	// NoVerdict: the request ended for reasons that say nothing about the
	// target, such as the client going away.
	NoVerdict
)

// String names the outcome in metrics.
func (o Outcome) String() string {
	switch o {
	case Success:
		return "success"
	case Failure:
		return "failure"
	default:
		return "no_verdict"
	}
}

// record applies a request's outcome to the passive health state and
// reports whether the target was just ejected.
func (t *Target) record(o Outcome, policy Ejection, now time.Time) (ejected bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	wasProbe := t.probing
	t.probing = false
	switch o {
	case Success:
		t.failures = 0
		t.ejectedUntil = time.Time{}
	case Failure:
		t.failures++
		// A failed probe sends the target straight back out.
		if wasProbe || (t.ejectedUntil.IsZero() && t.failures >= policy.After) {
			t.ejectedUntil = now.Add(policy.For)
			return true
		}
	}
	return false
}

// Pool is the set of interchangeable replicas of one service. It picks a
// replica by the power of two choices over requests in flight, and is safe
// for concurrent use.
type Pool struct {
	// Name identifies the service (ml, sandbox) in logs.
	Name     string
	ejection Ejection
	targets  []*Target
}

// NewPool returns a pool over targets, which must not be empty.
func NewPool(name string, ejection Ejection, targets ...*Target) *Pool {
	return &Pool{Name: name, ejection: ejection, targets: targets}
}

// Targets returns the pool's replicas in configuration order.
func (p *Pool) Targets() []*Target {
	return append([]*Target(nil), p.targets...)
}

// AnyHealthy reports whether at least one replica passes health checks.
func (p *Pool) AnyHealthy() bool {
	for _, t := range p.targets {
		if t.Healthy() {
			return true
		}
	}
	return false
}

// Available returns the replicas that may take a request now, without
// claiming any probe slot.
func (p *Pool) Available() []*Target {
	now := time.Now()
	var out []*Target
	for _, t := range p.targets {
		if t.available(now, false) {
			out = append(out, t)
		}
	}
	return out
}

// Pick chooses a replica not in tried: two available replicas at random,
// and of those the one with fewer requests in flight. This spreads load
// almost as well as asking every replica, without the herd that always
// choosing the least loaded causes. It returns nil when none is available.
// A replica it returns may hold the half-open probe slot, so it must be
// called (Proxy.OpenOn) and its exchange settled.
func (p *Pool) Pick(tried []*Target) *Target {
	var pool []*Target
	now := time.Now()
	for _, t := range p.targets {
		if !contains(tried, t) && t.available(now, false) {
			pool = append(pool, t)
		}
	}
	for len(pool) > 0 {
		best := pool[rand.IntN(len(pool))]
		if len(pool) > 1 {
			i := rand.IntN(len(pool) - 1)
			if pool[i] == best {
				i = len(pool) - 1
			}
			if other := pool[i]; other.inFlight.Load() < best.inFlight.Load() {
				best = other
			}
		}
		// Claiming can fail if another request took the probe slot since.
		if best.available(now, true) {
			return best
		}
		pool = remove(pool, best)
	}
	return nil
}

func contains(ts []*Target, t *Target) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

func remove(ts []*Target, t *Target) []*Target {
	out := ts[:0:0]
	for _, x := range ts {
		if x != t {
			out = append(out, x)
		}
	}
	return out
}
