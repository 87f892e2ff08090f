package ratelimit

import (
	"context"
	"sync"
	"time"
)

// sweepEvery is how many calls pass between sweeps of expired entries, which
// keeps the map from growing with keys that have gone quiet.
const sweepEvery = 4096

// Memory is an in-process limiter: exact for one gateway, independent per
// replica.
type Memory struct {
	now func() time.Time

	mu    sync.Mutex           // guards tat and calls
	tat   map[string]time.Time // theoretical arrival time per key
	calls int
}

// NewMemory returns an empty in-process limiter.
func NewMemory() *Memory {
	return &Memory{now: time.Now, tat: make(map[string]time.Time)}
}

// Allow implements Limiter; it never fails.
func (m *Memory) Allow(_ context.Context, key string, rule Rule) (Decision, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	d, tat := gcra(m.tat[key], now, rule)
	if d.Allowed {
		m.tat[key] = tat
	}
	if m.calls++; m.calls >= sweepEvery {
		m.calls = 0
		for k, t := range m.tat {
			// A TAT in the past is the same as no entry at all.
			if t.Before(now) {
				delete(m.tat, k)
			}
		}
	}
	return d, nil
}
