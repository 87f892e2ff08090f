package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"trine/gateway/internal/redistest"
)

func TestRedisRetentionBackfill(t *testing.T) {
	addr := redistest.Start(t)
	for name, run := range map[string]func(*testing.T, backend, *redis.Client){
		"old finished jobs and keys are purged": testBackfillPurges,
		"concurrent runs":                       testBackfillConcurrent,
		"the runner starts it":                  testBackfillByRunner,
		"waiting for the lock ends with ctx":    testBackfillWaitCancelled,
	} {
		t.Run(name, func(t *testing.T) {
			b := redisBackend(addr)(t)
			admin := redis.NewClient(&redis.Options{Addr: addr})
			t.Cleanup(func() { admin.Close() })
			run(t, b, admin)
		})
	}
}

// writeOldJob stores a job as a store older than the retention sets did:
// the hash and its idempotency key, in neither set.
func writeOldJob(t *testing.T, admin *redis.Client, status string, at time.Time, idemKey string) Job {
	t.Helper()
	ctx := context.Background()
	j := Job{ID: NewID(), Owner: "alice", Type: TypeSandboxRun, Input: json.RawMessage(`{}`), Status: status,
		IdempotencyKey: idemKey, MaxAttempts: 3, AvailableAt: ms(at), CreatedAt: ms(at), UpdatedAt: ms(at)}
	if err := admin.HSet(ctx, redisJobKey(j.ID), jobFields(j)...).Err(); err != nil {
		t.Fatal(err)
	}
	if idemKey != "" {
		if err := admin.Set(ctx, redisIdemKey(j.Owner, idemKey), j.ID, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	return j
}

func testBackfillPurges(t *testing.T, b backend, admin *redis.Client) {
	ctx := context.Background()
	s := b.store.(*Redis)
	old := b.clock.Now().Add(-30 * 24 * time.Hour)
	succeeded := writeOldJob(t, admin, StatusSucceeded, old, "k-succeeded")
	failed := writeOldJob(t, admin, StatusFailed, old, "")
	running := writeOldJob(t, admin, StatusRunning, old, "")
	queued := writeOldJob(t, admin, StatusQueued, old, "k-queued")
	recent := writeOldJob(t, admin, StatusSucceeded, b.clock.Now(), "")
	// A job finished since the sets exist keeps its score.
	current := enqueue(t, s, NewJob{})
	b.clock.Set(b.clock.Now().Add(time.Minute))
	finish(t, b)

	r := NewRunner(s, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	r.Retention = Retention{Jobs: 7 * 24 * time.Hour, IdempotencyKeys: 24 * time.Hour}
	res, err := s.Backfill(ctx)
	if err != nil || res != (BackfillResult{Ran: true, Jobs: 3, IdempotencyKeys: 2}) {
		t.Errorf("backfill: %+v %v; want 3 jobs (two old, one recent) and 2 keys", res, err)
	}
	for _, id := range []string{running.ID, queued.ID} {
		if err := admin.ZScore(ctx, redisFinished, id).Err(); !errors.Is(err, redis.Nil) {
			t.Errorf("unfinished job %s is in the finished set: %v", id, err)
		}
	}
	if score, err := admin.ZScore(ctx, redisFinished, current.ID).Result(); err != nil || int64(score) != ms(b.clock.Now()) {
		t.Errorf("score of a job finished with the sets: %v %v", score, err)
	}
	r.purge(ctx, b.clock.Now())
	for _, id := range []string{succeeded.ID, failed.ID} {
		if _, err := s.Get(ctx, "alice", id); !errors.Is(err, ErrNotFound) {
			t.Errorf("old finished job %s still there: %v", id, err)
		}
	}
	for _, id := range []string{running.ID, queued.ID, recent.ID, current.ID} {
		get(t, s, id)
	}
	for _, k := range []string{"k-succeeded", "k-queued"} {
		if n, err := admin.Exists(ctx, redisIdemKey("alice", k)).Result(); err != nil || n != 0 {
			t.Errorf("old idempotency key %s still there: %d %v", k, n, err)
		}
	}

	// The marker makes a second run skip the scan: a job written the old
	// way now stays out of the set.
	late := writeOldJob(t, admin, StatusSucceeded, old, "")
	if res, err := s.Backfill(ctx); err != nil || res != (BackfillResult{}) {
		t.Errorf("second backfill: %+v %v", res, err)
	}
	if err := admin.ZScore(ctx, redisFinished, late.ID).Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("the second backfill scanned: %v", err)
	}
}

func testBackfillConcurrent(t *testing.T, b backend, admin *redis.Client) {
	ctx := context.Background()
	old := b.clock.Now().Add(-30 * 24 * time.Hour)
	const n = 1200 // more than two SCAN batches
	pipe := admin.Pipeline()
	for range n {
		id := NewID()
		pipe.HSet(ctx, redisJobKey(id), "id", id, "status", StatusFailed, "updated_at", ms(old))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	stores := make([]*Redis, 3)
	for i := range stores {
		stores[i] = NewRedis(redis.NewClient(&redis.Options{Addr: admin.Options().Addr}), b.clock.Now)
		stores[i].backfillPoll = 10 * time.Millisecond
		t.Cleanup(func() { stores[i].Close() })
	}
	results := make([]BackfillResult, len(stores))
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Add(1)
		go func() { defer wg.Done(); results[i], errs[i] = s.Backfill(ctx) }()
	}
	wg.Wait()
	ran, added := 0, 0
	for i, res := range results {
		if errs[i] != nil {
			t.Fatalf("backfill %d: %v", i, errs[i])
		}
		if res.Ran {
			ran++
		}
		added += res.Jobs
	}
	if ran != 1 || added != n {
		t.Errorf("%d runs scanned, adding %d jobs; want 1 and %d", ran, added, n)
	}
	if got := admin.ZCard(ctx, redisFinished).Val(); got != n {
		t.Errorf("finished set has %d, want %d", got, n)
	}
	if got := admin.Exists(ctx, redisBackfillLock).Val(); got != 0 {
		t.Error("the lock was left behind")
	}
}

func testBackfillByRunner(t *testing.T, b backend, admin *redis.Client) {
	old := writeOldJob(t, admin, StatusSucceeded, b.clock.Now().Add(-time.Hour), "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		NewRunner(b.store, nil, slog.New(slog.NewTextHandler(io.Discard, nil))).Run(ctx)
	}()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(5 * time.Second); admin.Exists(ctx, redisBackfillDone).Val() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the runner did not backfill")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := admin.ZScore(ctx, redisFinished, old.ID).Err(); err != nil {
		t.Errorf("old job not in the finished set: %v", err)
	}
}

func testBackfillWaitCancelled(t *testing.T, b backend, admin *redis.Client) {
	old := writeOldJob(t, admin, StatusSucceeded, b.clock.Now().Add(-time.Hour), "")
	if err := admin.Set(context.Background(), redisBackfillLock, "another gateway", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	s := b.store.(*Redis)
	s.backfillPoll = 10 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if res, err := s.Backfill(ctx); !errors.Is(err, context.DeadlineExceeded) || res.Ran {
		t.Errorf("backfill while another holds the lock: %+v %v", res, err)
	}
	if err := admin.ZScore(context.Background(), redisFinished, old.ID).Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("scanned without the lock: %v", err)
	}
	if got := admin.Get(context.Background(), redisBackfillLock).Val(); got != "another gateway" {
		t.Errorf("the other gateway's lock became %q", got)
	}
}
