package fanout

import (
	"slices"
	"sync"
	"time"
)

// latencyWindow is how many recent latencies the hedge delay is taken from:
// enough for a stable p95, few enough to follow a change in load quickly.
const latencyWindow = 256

// Latencies keeps the most recent RAG latencies (time to response headers)
// to derive the hedge delay from. It is safe for concurrent use.
type Latencies struct {
	mu   sync.Mutex // guards ring, next and full
	ring [latencyWindow]time.Duration
	next int
	full bool
}

// Observe records one latency.
func (l *Latencies) Observe(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ring[l.next] = d
	l.next = (l.next + 1) % latencyWindow
	l.full = l.full || l.next == 0
}

// P95 returns the 95th percentile of the recorded latencies, and false when
// there are too few to say.
func (l *Latencies) P95() (time.Duration, bool) {
	l.mu.Lock()
	n := l.next
	if l.full {
		n = latencyWindow
	}
	if n < 20 {
		l.mu.Unlock()
		return 0, false
	}
	sorted := slices.Clone(l.ring[:n])
	l.mu.Unlock()
	slices.Sort(sorted)
	return sorted[(n*95+99)/100-1], true
}
