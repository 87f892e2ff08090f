package ratelimit

import "sync"

// InFlight caps concurrent requests per key. The cap is per gateway
// process: concurrency is a local resource, unlike a rate.
type InFlight struct {
	mu sync.Mutex     // guards n
	n  map[string]int // requests in flight per key; absent means zero
}

// NewInFlight returns a counter with nothing in flight.
func NewInFlight() *InFlight {
	return &InFlight{n: make(map[string]int)}
}

// Acquire takes a slot for key if fewer than max are taken. When ok, the
// caller must call release exactly once when the request is done.
func (f *InFlight) Acquire(key string, max int) (release func(), ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n[key] >= max {
		return nil, false
	}
	f.n[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.n[key]--; f.n[key] <= 0 {
				delete(f.n, key)
			}
		})
	}, true
}

// Count returns the number of requests in flight for key.
func (f *InFlight) Count(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n[key]
}
