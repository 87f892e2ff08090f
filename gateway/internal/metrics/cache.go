package metrics

import (
	"sync"
	"sync/atomic"
)

// cache maps label values to their resolved series. Resolving labels on
// every request would hash them under the vector's lock each time; here a
// hit is a lock-free lookup that allocates nothing, and a miss, once per
// label set, copies the map. Label sets are bounded (route patterns, status
// codes, upstream names), so the map stays small.
type cache[K comparable, V any] struct {
	mu sync.Mutex // serialises misses
	m  atomic.Pointer[map[K]V]
}

// get returns the value for k, creating it with resolve on first use.
func (c *cache[K, V]) get(k K, resolve func() V) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[K]V
	if p := c.m.Load(); p != nil {
		old = *p
	}
	if v, ok := old[k]; ok {
		return v
	}
	next := make(map[K]V, len(old)+1)
	for ok, ov := range old {
		next[ok] = ov
	}
	v := resolve()
	next[k] = v
	c.m.Store(&next)
	return v
}
