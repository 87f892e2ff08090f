package jobs

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"trine/gateway/internal/redistest"
)

// clock is a settable test clock, shared by a store and its test.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// backend is a fresh, empty store with a claimer working on it.
type backend struct {
	store   Store
	claimer claimer
	clock   *clock
}

func newClock() *clock { return &clock{t: time.UnixMilli(1_800_000_000_000)} }

func sqliteBackend(t *testing.T) backend {
	path := filepath.Join(t.TempDir(), "sub", "jobs.sqlite3")
	c := newClock()
	s, err := OpenSQLite(context.Background(), path, c.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// The worker's own connections, with the contract's settings.
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(4)
	t.Cleanup(func() { db.Close() })
	return backend{store: s, claimer: sqliteClaimer{db}, clock: c}
}

func redisBackend(addr string) func(t *testing.T) backend {
	return func(t *testing.T) backend {
		ctx := context.Background()
		admin := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { admin.Close() })
		if err := admin.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		c := newClock()
		s, err := OpenRedis(ctx, redis.NewClient(&redis.Options{Addr: addr}), c.Now)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		// A second start finds the group: BUSYGROUP is not an error.
		again, err := OpenRedis(ctx, redis.NewClient(&redis.Options{Addr: addr}), c.Now)
		if err != nil {
			t.Fatalf("second OpenRedis: %v", err)
		}
		again.Close()
		return backend{store: s, claimer: redisClaimer{client: admin}, clock: c}
	}
}

func TestSQLiteConformance(t *testing.T) { runConformance(t, sqliteBackend) }

func TestRedisConformance(t *testing.T) { runConformance(t, redisBackend(redistest.Start(t))) }

const lease = 30 * time.Second

func enqueue(t *testing.T, s Store, n NewJob) Job {
	t.Helper()
	if n.Owner == "" {
		n.Owner = "alice"
	}
	if n.Type == "" {
		n.Type = TypeSandboxRun
	}
	if n.Input == nil {
		n.Input = json.RawMessage(`{"language":"python","code":"print(1)"}`)
	}
	if n.MaxAttempts == 0 {
		n.MaxAttempts = 3
	}
	j, existing, err := s.Enqueue(context.Background(), n)
	if err != nil || existing {
		t.Fatalf("enqueue: %v (existing %v)", err, existing)
	}
	return j
}

func mustClaim(t *testing.T, b backend, worker string, now time.Time) claimed {
	t.Helper()
	c, ok := b.claimer.claim(t, worker, now, lease)
	if !ok {
		t.Fatalf("%s found nothing to claim at %v", worker, now)
	}
	return c
}

func complete(t *testing.T, b backend, c claimed, kind string, payload string) (Job, bool, error) {
	t.Helper()
	o := Outcome{LeaseToken: c.Token, Kind: kind}
	if kind == OutcomeSucceeded {
		o.Result = json.RawMessage(payload)
	} else {
		o.Error = json.RawMessage(payload)
	}
	res, err := b.store.CompleteMany(context.Background(), []Completion{{ID: c.ID, Outcome: o}})
	if err != nil {
		t.Fatalf("complete %s: %v", c.ID, err)
	}
	j, applied, err := res[0].Job, res[0].Applied, res[0].Err
	if err == nil || errors.Is(err, ErrConflict) {
		if c.ack != nil {
			c.ack()
		}
	}
	return j, applied, err
}

func get(t *testing.T, s Store, id string) Job {
	t.Helper()
	j, err := s.Get(context.Background(), "alice", id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return j
}

func runConformance(t *testing.T, newBackend func(*testing.T) backend) {
	tests := []struct {
		name string
		run  func(*testing.T, backend)
	}{
		{"enqueue and get", testEnqueueGet},
		{"owner isolation", testOwnerIsolation},
		{"idempotency", testIdempotency},
		{"succeeded", testSucceeded},
		{"failed", testFailed},
		{"retry with backoff", testRetry},
		{"retry with attempts exhausted fails", testRetryExhausted},
		{"lease expiry and reclaim", testLeaseExpiry},
		{"reaper fails exhausted jobs", testReaper},
		{"callback conflicts and repeats", testCallbackConflicts},
		{"delivery claim lease", testDeliveryClaim},
		{"delivery attempts", testDeliveryAttempts},
		{"concurrent claims", testConcurrentClaims},
		{"batch of outcomes", testCompleteMany},
		{"retention of finished jobs", testPurgeFinished},
		{"retention of idempotency keys", testPurgeIdempotencyKeys},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newBackend(t)) })
	}
}

func testEnqueueGet(t *testing.T, b backend) {
	in := json.RawMessage(`{"query":"q"}`)
	j := enqueue(t, b.store, NewJob{Type: TypeRAGQuery, Input: in, WebhookURL: "https://example.com/h",
		RequestID: "req-1", MaxAttempts: 5})
	if !ValidID(j.ID) || j.Status != StatusQueued {
		t.Fatalf("enqueued %+v", j)
	}
	got := get(t, b.store, j.ID)
	want := RequestHash(TypeRAGQuery, "https://example.com/h", in)
	if got.Type != TypeRAGQuery || string(got.Input) != string(in) || got.Status != StatusQueued ||
		got.MaxAttempts != 5 || got.Attempts != 0 || got.RequestID != "req-1" || got.RequestHash != want ||
		got.CreatedAt != b.clock.Now().UnixMilli() || got.Result != nil || got.Error != nil || got.Webhook != nil {
		t.Errorf("got %+v", got)
	}
	p := got.Public()
	raw, _ := json.Marshal(p)
	wantJSON := fmt.Sprintf(`{"id":%q,"type":"rag.query","status":"queued","result":null,"error":null,`+
		`"created_at":"2027-01-15T08:00:00.000Z","updated_at":"2027-01-15T08:00:00.000Z","attempts":0,`+
		`"webhook":{"url":"https://example.com/h","status":"pending","attempts":[]}}`, j.ID)
	if string(raw) != wantJSON {
		t.Errorf("public job\n got %s\nwant %s", raw, wantJSON)
	}
}

func testOwnerIsolation(t *testing.T, b backend) {
	j := enqueue(t, b.store, NewJob{})
	if _, err := b.store.Get(context.Background(), "bob", j.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("other owner: %v, want ErrNotFound", err)
	}
	if _, err := b.store.Get(context.Background(), "alice", NewID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown id: %v, want ErrNotFound", err)
	}
}

func testIdempotency(t *testing.T, b backend) {
	ctx := context.Background()
	n := NewJob{Owner: "alice", Type: TypeSandboxRun, Input: json.RawMessage(`{"code":"1"}`),
		IdempotencyKey: "k-1", MaxAttempts: 3}
	first := enqueue(t, b.store, n)
	again, existing, err := b.store.Enqueue(ctx, n)
	if err != nil || !existing || again.ID != first.ID {
		t.Fatalf("repeat: %v existing=%v id %s, want %s", err, existing, again.ID, first.ID)
	}
	n.Input = json.RawMessage(`{"code":"2"}`)
	if _, _, err := b.store.Enqueue(ctx, n); !errors.Is(err, ErrIdempotencyMismatch) {
		t.Errorf("different body: %v, want ErrIdempotencyMismatch", err)
	}
	n.Owner = "bob"
	other, existing, err := b.store.Enqueue(ctx, n)
	if err != nil || existing || other.ID == first.ID {
		t.Errorf("same key, other owner: %v existing=%v", err, existing)
	}
	// Exactly two jobs exist to claim.
	for i := range 2 {
		mustClaim(t, b, "w", b.clock.Now())
		_ = i
	}
	if c, ok := b.claimer.claim(t, "w", b.clock.Now(), lease); ok {
		t.Errorf("a third job %s was queued", c.ID)
	}
}

func testSucceeded(t *testing.T, b backend) {
	j := enqueue(t, b.store, NewJob{WebhookURL: "https://example.com/h"})
	c := mustClaim(t, b, "w1", b.clock.Now())
	if c.ID != j.ID || c.Attempts != 1 {
		t.Fatalf("claimed %+v", c)
	}
	if got := get(t, b.store, j.ID); got.Status != StatusRunning || got.LeaseOwner != "w1" {
		t.Errorf("after claim: %+v", got)
	}
	b.clock.Set(b.clock.Now().Add(time.Second))
	done, applied, err := complete(t, b, c, OutcomeSucceeded, `{"answer":"42"}`)
	if err != nil || !applied || done.Status != StatusSucceeded || string(done.Result) != `{"answer":"42"}` {
		t.Fatalf("complete: %+v applied=%v err=%v", done, applied, err)
	}
	got := get(t, b.store, j.ID)
	if got.Status != StatusSucceeded || got.UpdatedAt != b.clock.Now().UnixMilli() || got.Error != nil ||
		got.Webhook == nil || got.Webhook.Status != DeliveryPending || got.Webhook.ID != DeliveryID(j.ID) {
		t.Errorf("after success: %+v webhook %+v", got, got.Webhook)
	}
	if _, ok := b.claimer.claim(t, "w2", b.clock.Now().Add(time.Hour), lease); ok {
		t.Error("a succeeded job was claimed again")
	}
}

func testFailed(t *testing.T, b backend) {
	j := enqueue(t, b.store, NewJob{})
	c := mustClaim(t, b, "w1", b.clock.Now())
	done, applied, err := complete(t, b, c, OutcomeFailed, `{"type":"invalid_request","message":"bad"}`)
	if err != nil || !applied || done.Status != StatusFailed {
		t.Fatalf("complete: %+v %v %v", done, applied, err)
	}
	if got := get(t, b.store, j.ID); got.Status != StatusFailed || string(got.Error) != `{"type":"invalid_request","message":"bad"}` || got.Webhook != nil {
		t.Errorf("after failure: %+v", got)
	}
	if _, ok, _ := b.store.ClaimDelivery(context.Background(), b.clock.Now()); ok {
		t.Error("a job without webhook_url got a delivery")
	}
}

func testRetry(t *testing.T, b backend) {
	ctx := context.Background()
	j := enqueue(t, b.store, NewJob{MaxAttempts: 5})
	t0 := b.clock.Now()
	c := mustClaim(t, b, "w1", t0)
	done, applied, err := complete(t, b, c, OutcomeRetry, `{"type":"upstream_error","message":"down"}`)
	if err != nil || !applied || done.Status != StatusQueued {
		t.Fatalf("retry: %+v %v %v", done, applied, err)
	}
	// 2^1 s ± 20 %.
	if d := done.AvailableAt - t0.UnixMilli(); d < 1600 || d > 2400 {
		t.Errorf("available %d ms after the callback, want 1600-2400", d)
	}
	if _, err := b.store.Reap(ctx, t0); err != nil {
		t.Fatal(err)
	}
	if c, ok := b.claimer.claim(t, "w2", t0, lease); ok {
		t.Fatalf("claimed %s before its available_at", c.ID)
	}
	due := time.UnixMilli(done.AvailableAt)
	if _, err := b.store.Reap(ctx, due); err != nil {
		t.Fatal(err)
	}
	c2 := mustClaim(t, b, "w2", due)
	if c2.ID != j.ID || c2.Attempts != 2 {
		t.Errorf("reclaimed %+v, want %s with attempts 2", c2, j.ID)
	}
}

func testRetryExhausted(t *testing.T, b backend) {
	j := enqueue(t, b.store, NewJob{MaxAttempts: 1, WebhookURL: "https://example.com/h"})
	c := mustClaim(t, b, "w1", b.clock.Now())
	done, applied, err := complete(t, b, c, OutcomeRetry, `{"type":"upstream_timeout","message":"slow"}`)
	if err != nil || !applied || done.Status != StatusFailed || string(done.Error) != `{"type":"upstream_timeout","message":"slow"}` {
		t.Fatalf("retry on the last attempt: %+v %v %v", done, applied, err)
	}
	if d, ok, err := b.store.ClaimDelivery(context.Background(), b.clock.Now()); err != nil || !ok || d.Job.ID != j.ID {
		t.Errorf("delivery: %+v %v %v", d, ok, err)
	}
}

func testLeaseExpiry(t *testing.T, b backend) {
	j := enqueue(t, b.store, NewJob{MaxAttempts: 3})
	t0 := b.clock.Now()
	first := mustClaim(t, b, "w1", t0)
	if c, ok := b.claimer.claim(t, "w2", t0.Add(lease/2), lease); ok {
		t.Fatalf("claimed %s while its lease was live", c.ID)
	}
	// The reaper runs every second; on Redis it re-adds the expired job.
	if _, err := b.store.Reap(context.Background(), t0.Add(lease+time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	second := mustClaim(t, b, "w2", t0.Add(lease+time.Millisecond))
	if second.ID != j.ID || second.Attempts != 2 || second.Token == first.Token {
		t.Fatalf("reclaimed %+v", second)
	}
	if _, _, err := complete(t, b, first, OutcomeSucceeded, `{}`); !errors.Is(err, ErrConflict) {
		t.Errorf("old lease's callback: %v, want ErrConflict", err)
	}
	if _, applied, err := complete(t, b, second, OutcomeSucceeded, `{"ok":true}`); err != nil || !applied {
		t.Errorf("new lease's callback: %v %v", applied, err)
	}
}

func testReaper(t *testing.T, b backend) {
	ctx := context.Background()
	reap := func(now time.Time) []Job {
		t.Helper()
		b.clock.Set(now)
		failed, err := b.store.Reap(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		return failed
	}
	t0 := b.clock.Now()
	j := enqueue(t, b.store, NewJob{MaxAttempts: 2, WebhookURL: "https://example.com/h"})
	mustClaim(t, b, "w1", t0)
	t1 := t0.Add(lease + time.Millisecond)
	if failed := reap(t1); len(failed) != 0 {
		t.Fatalf("reaped %+v with attempts left", failed)
	}
	if c := mustClaim(t, b, "w2", t1); c.ID != j.ID || c.Attempts != 2 {
		t.Fatalf("second claim %+v", c)
	}
	other := enqueue(t, b.store, NewJob{MaxAttempts: 3})
	mustClaim(t, b, "w3", t1)
	t2 := t1.Add(lease + time.Millisecond)
	failed := reap(t2)
	if len(failed) != 1 || failed[0].ID != j.ID {
		t.Fatalf("reap: %+v", failed)
	}
	// other's lease expired too, with attempts left: claimable, not failed.
	if c := mustClaim(t, b, "w4", t2); c.ID != other.ID || c.Attempts != 2 {
		t.Errorf("claimed %+v, want %s again", c, other.ID)
	}
	if c, ok := b.claimer.claim(t, "w5", t2, lease); ok {
		t.Errorf("claimed %+v, an exhausted job", c)
	}
	got := get(t, b.store, j.ID)
	var e struct{ Type string }
	if err := json.Unmarshal(got.Error, &e); err != nil || got.Status != StatusFailed || e.Type != "attempts_exhausted" {
		t.Errorf("reaped job %+v", got)
	}
	if got.Webhook == nil || got.Webhook.Status != DeliveryPending {
		t.Errorf("reaped job has no pending delivery: %+v", got.Webhook)
	}
	if again := reap(t2); len(again) != 0 {
		t.Errorf("second reap: %+v", again)
	}
}

func testCallbackConflicts(t *testing.T, b backend) {
	enqueue(t, b.store, NewJob{})
	c := mustClaim(t, b, "w1", b.clock.Now())
	wrong := c
	wrong.Token = NewLeaseToken()
	if _, _, err := complete(t, b, wrong, OutcomeSucceeded, `{}`); !errors.Is(err, ErrConflict) {
		t.Errorf("wrong token: %v, want ErrConflict", err)
	}
	if _, applied, err := complete(t, b, c, OutcomeSucceeded, `{"n":1}`); err != nil || !applied {
		t.Fatalf("complete: %v %v", applied, err)
	}
	j, applied, err := complete(t, b, c, OutcomeSucceeded, `{"n":1}`)
	if err != nil || applied || j.Status != StatusSucceeded {
		t.Errorf("repeat: %+v applied=%v %v, want ok and not applied", j, applied, err)
	}
	if _, _, err := complete(t, b, c, OutcomeFailed, `{"type":"x","message":"y"}`); !errors.Is(err, ErrConflict) {
		t.Errorf("contradicting repeat: %v, want ErrConflict", err)
	}
	missing := claimed{ID: NewID(), Token: c.Token}
	if _, _, err := complete(t, b, missing, OutcomeSucceeded, `{}`); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown job: %v, want ErrNotFound", err)
	}
}
