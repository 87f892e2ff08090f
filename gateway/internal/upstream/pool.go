// Package upstream knows the internal services behind the gateway: their
// replicas and health (Target, Pool, Checker) and how a public request is
// relayed to one of them (Proxy).
package upstream

import (
	"net/url"
	"sync"
	"sync/atomic"
)

// Target is one instance of an internal service together with its current
// health as seen by the active checker and by failed proxy attempts.
type Target struct {
	// Name identifies the target in logs, metrics and /readyz (ml-0, sandbox).
	Name string
	// URL is the base URL that request paths are appended to.
	URL *url.URL

	mu      sync.Mutex // guards checked, healthy and lastErr
	checked bool       // whether any health verdict has been recorded yet
	healthy bool
	lastErr string
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
	// Healthy reports whether the target may receive traffic.
	Healthy bool `json:"healthy"`
	// LastError is why the target is unhealthy, or "" when it is healthy.
	LastError string `json:"last_error"`
}

// Healthy reports whether the target may receive traffic.
func (t *Target) Healthy() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.healthy
}

// Status returns a snapshot of the target's health.
func (t *Target) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Status{Name: t.Name, URL: t.URL.String(), Healthy: t.healthy, LastError: t.lastErr}
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

// Pool is the set of interchangeable replicas of one service. It hands out
// healthy replicas in round-robin order and is safe for concurrent use.
type Pool struct {
	// Name identifies the service (ml, sandbox) in logs.
	Name    string
	targets []*Target
	next    atomic.Uint64
}

// NewPool returns a pool over targets, which must not be empty.
func NewPool(name string, targets ...*Target) *Pool {
	return &Pool{Name: name, targets: targets}
}

// Targets returns the pool's replicas in configuration order.
func (p *Pool) Targets() []*Target {
	return append([]*Target(nil), p.targets...)
}

// AnyHealthy reports whether at least one replica is healthy.
func (p *Pool) AnyHealthy() bool {
	for _, t := range p.targets {
		if t.Healthy() {
			return true
		}
	}
	return false
}

// candidates returns the healthy replicas, rotated so that successive calls
// start at successive replicas. Rotating over the healthy subset (rather than
// over all replicas, skipping the sick) keeps the load even while one is down.
func (p *Pool) candidates() []*Target {
	healthy := make([]*Target, 0, len(p.targets))
	for _, t := range p.targets {
		if t.Healthy() {
			healthy = append(healthy, t)
		}
	}
	if len(healthy) == 0 {
		return nil
	}
	start := int((p.next.Add(1) - 1) % uint64(len(healthy)))
	return append(healthy[start:], healthy[:start]...)
}
