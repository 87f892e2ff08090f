package ratelimit

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"trine/gateway/internal/redistest"
)

// startRedis runs a private redis-server; see redistest.Start.
func startRedis(t *testing.T) string {
	return redistest.Start(t)
}

func newRedisLimiter(t *testing.T, addr string) *Redis {
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return NewRedis(c, "test:")
}

func TestRedisGCRA(t *testing.T) {
	l := newRedisLimiter(t, startRedis(t))
	ctx := context.Background()
	rule := Rule{Rate: 0.01, Burst: 3} // nothing refills during the test
	for i, wantRemaining := range []int{2, 1, 0} {
		d, err := l.Allow(ctx, "k", rule)
		if err != nil || !d.Allowed || d.Remaining != wantRemaining || d.Limit != 3 {
			t.Fatalf("request %d: %+v %v", i, d, err)
		}
	}
	d, err := l.Allow(ctx, "k", rule)
	if err != nil || d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > 100*time.Second {
		t.Fatalf("fourth request: %+v %v", d, err)
	}
	if d, _ := l.Allow(ctx, "other", rule); !d.Allowed {
		t.Error("keys are not independent")
	}
}

func TestRedisScriptReloadedAfterFlush(t *testing.T) {
	addr := startRedis(t)
	l := newRedisLimiter(t, addr)
	ctx := context.Background()
	if _, err := l.Allow(ctx, "k", Rule{Rate: 1, Burst: 1}); err != nil {
		t.Fatal(err)
	}
	// As after a Redis restart: the script cache is empty, so EVALSHA
	// fails with NOSCRIPT and the limiter must send the script again.
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Allow(ctx, "k2", Rule{Rate: 1, Burst: 1}); err != nil {
		t.Fatalf("after SCRIPT FLUSH: %v", err)
	}
}

// TestRedisSharedAcrossReplicas runs three limiters with their own clients,
// as three gateway replicas would, against one key, and checks that
// together they admit no more than the limit allows over the elapsed time.
func TestRedisSharedAcrossReplicas(t *testing.T) {
	addr := startRedis(t)
	rule := Rule{Rate: 200, Burst: 20}
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 3 {
		l := newRedisLimiter(t, addr)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(start) < time.Second {
					d, err := l.Allow(context.Background(), "shared", rule)
					if err != nil {
						t.Error(err)
						return
					}
					if d.Allowed {
						admitted.Add(1)
					} else {
						refused.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	// The most GCRA can admit in elapsed: the burst plus the rate's worth.
	bound := float64(rule.Burst) + rule.Rate*elapsed.Seconds()
	t.Logf("admitted %d, refused %d in %v (bound %.0f)", admitted.Load(), refused.Load(), elapsed, bound)
	if float64(admitted.Load()) > bound*1.01 {
		t.Errorf("admitted %d, more than the limit %.0f + 1%%", admitted.Load(), bound)
	}
	if refused.Load() == 0 {
		t.Error("no request was refused, so the test did not exercise the limit")
	}
}

func TestRedisDown(t *testing.T) {
	addr := startRedis(t)
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	l := NewRedis(c, "test:")
	// Stop the server: shutting it down with the client we hold.
	_ = c.Shutdown(context.Background()).Err()
	var errs atomic.Int64
	f := NewFailover(l, NewMemory(), FailOpen, func(context.Context, error) { errs.Add(1) })
	if d, err := f.Allow(context.Background(), "k", Rule{Rate: 1, Burst: 1}); err != nil || !d.Allowed {
		t.Errorf("fail-open: %+v %v", d, err)
	}
	if _, err := NewFailover(l, NewMemory(), FailClosed, func(context.Context, error) {}).Allow(
		context.Background(), "k", Rule{Rate: 1, Burst: 1}); err == nil {
		t.Error("fail-closed admitted without Redis")
	}
	if errs.Load() != 1 {
		t.Errorf("errors reported: %d", errs.Load())
	}
}
