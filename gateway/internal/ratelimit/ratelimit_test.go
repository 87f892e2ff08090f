package ratelimit

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestMemoryGCRA(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	now := start
	m := NewMemory()
	m.now = func() time.Time { return now }
	rule := Rule{Rate: 10, Burst: 3} // one request per 100 ms, three at once
	steps := []struct {
		at        time.Duration
		allowed   bool
		remaining int
		retry     time.Duration
	}{
		{0, true, 2, 0},
		{0, true, 1, 0},
		{0, true, 0, 0},
		{0, false, 0, 100 * time.Millisecond},
		{50 * time.Millisecond, false, 0, 50 * time.Millisecond},
		{100 * time.Millisecond, true, 0, 0},
		{100 * time.Millisecond, false, 0, 100 * time.Millisecond},
		{time.Second, true, 2, 0}, // fully replenished after a quiet second
	}
	for i, st := range steps {
		now = start.Add(st.at)
		d, err := m.Allow(context.Background(), "k", rule)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != st.allowed || d.Remaining != st.remaining || d.RetryAfter != st.retry || d.Limit != 3 {
			t.Errorf("step %d at %v: %+v, want allowed=%v remaining=%d retry=%v", i, st.at, d, st.allowed, st.remaining, st.retry)
		}
	}
	// Keys are independent.
	if d, _ := m.Allow(context.Background(), "other", rule); !d.Allowed || d.Remaining != 2 {
		t.Errorf("other key: %+v", d)
	}
}

func TestMemoryReset(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := NewMemory()
	m.now = func() time.Time { return now }
	d, _ := m.Allow(context.Background(), "k", Rule{Rate: 1, Burst: 5})
	// One request used: full again one emission interval later.
	if d.Reset != time.Second {
		t.Errorf("reset %v, want 1s", d.Reset)
	}
}

func TestMemoryConcurrentNeverOverAdmits(t *testing.T) {
	m := NewMemory()
	// A rate so low that only the burst can be admitted during the test.
	rule := Rule{Rate: 0.001, Burst: 50}
	var mu sync.Mutex
	admitted := 0
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if d, _ := m.Allow(context.Background(), "k", rule); d.Allowed {
					mu.Lock()
					admitted++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if admitted != 50 {
		t.Errorf("admitted %d, want exactly the burst of 50", admitted)
	}
}

func TestInFlight(t *testing.T) {
	f := NewInFlight()
	r1, ok1 := f.Acquire("k", 2)
	r2, ok2 := f.Acquire("k", 2)
	_, ok3 := f.Acquire("k", 2)
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("acquire: %v %v %v", ok1, ok2, ok3)
	}
	if _, ok := f.Acquire("other", 2); !ok {
		t.Error("keys are not independent")
	}
	r1()
	r1() // a second release is a no-op
	if f.Count("k") != 1 {
		t.Errorf("count %d after one release", f.Count("k"))
	}
	if _, ok := f.Acquire("k", 2); !ok {
		t.Error("a released slot was not reusable")
	}
	r2()
}

type failing struct{}

func (failing) Allow(context.Context, string, Rule) (Decision, error) {
	return Decision{}, context.DeadlineExceeded
}

func TestFailover(t *testing.T) {
	var errs int
	count := func(context.Context, error) { errs++ }
	open := NewFailover(failing{}, NewMemory(), FailOpen, count)
	if d, err := open.Allow(context.Background(), "k", Rule{Rate: 1, Burst: 1}); err != nil || !d.Allowed {
		t.Errorf("open: %+v %v", d, err)
	}
	if d, _ := open.Allow(context.Background(), "k", Rule{Rate: 1, Burst: 1}); d.Allowed {
		t.Error("open mode did not fall back to the local limit")
	}
	closed := NewFailover(failing{}, NewMemory(), FailClosed, count)
	if _, err := closed.Allow(context.Background(), "k", Rule{Rate: 1, Burst: 1}); err == nil {
		t.Error("closed mode decided without the shared limiter")
	}
	if errs != 3 {
		t.Errorf("onError called %d times, want 3", errs)
	}
}
