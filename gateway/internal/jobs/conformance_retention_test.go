package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// testCompleteMany checks that a batch applies each entry with the rules
// of a single callback, answers each in its place, and can be repeated.
func testCompleteMany(t *testing.T, b backend) {
	ctx := context.Background()
	hooked := enqueue(t, b.store, NewJob{WebhookURL: "https://example.com/h"})
	plain := enqueue(t, b.store, NewJob{MaxAttempts: 5})
	stale := enqueue(t, b.store, NewJob{})
	claims := map[string]claimed{}
	for range 3 {
		c := mustClaim(t, b, "w1", b.clock.Now())
		claims[c.ID] = c
	}
	items := []Completion{
		{ID: hooked.ID, Outcome: Outcome{LeaseToken: claims[hooked.ID].Token, Kind: OutcomeSucceeded, Result: json.RawMessage(`{"n":1}`)}},
		{ID: "job_aaaaaaaaaaaaaaaaaaaaaaaaaa", Outcome: Outcome{LeaseToken: "t", Kind: OutcomeSucceeded, Result: json.RawMessage(`{}`)}},
		{ID: plain.ID, Outcome: Outcome{LeaseToken: claims[plain.ID].Token, Kind: OutcomeRetry, Error: json.RawMessage(`{"type":"upstream_error","message":"m"}`)}},
		{ID: stale.ID, Outcome: Outcome{LeaseToken: "not-the-lease", Kind: OutcomeFailed, Error: json.RawMessage(`{"type":"invalid_request","message":"m"}`)}},
	}
	for round, wantApplied := range []bool{true, false} { // the second is a worker repeating a lost answer
		res, err := b.store.CompleteMany(ctx, items)
		if err != nil || len(res) != len(items) {
			t.Fatalf("round %d: %v %+v", round, err, res)
		}
		if r := res[0]; r.Err != nil || r.Applied != wantApplied || r.Job.ID != hooked.ID || r.Job.Status != StatusSucceeded {
			t.Errorf("round %d, succeeded entry: %+v", round, r)
		}
		if r := res[1]; !errors.Is(r.Err, ErrNotFound) || r.Applied {
			t.Errorf("round %d, unknown job: %+v", round, r)
		}
		if r := res[2]; r.Err != nil || r.Applied != wantApplied || r.Job.Status != StatusQueued {
			t.Errorf("round %d, retry entry: %+v", round, r)
		}
		if r := res[3]; !errors.Is(r.Err, ErrConflict) || r.Applied {
			t.Errorf("round %d, stale lease: %+v", round, r)
		}
	}
	if got := get(t, b.store, hooked.ID); got.Webhook == nil || got.Webhook.Status != DeliveryPending {
		t.Errorf("the succeeded entry has no delivery: %+v", got)
	}
	if got := get(t, b.store, stale.ID); got.Status != StatusRunning {
		t.Errorf("a stale lease changed its job: %+v", got)
	}
	for _, c := range claims {
		if c.ack != nil {
			c.ack()
		}
	}
}

// finish claims the next job and reports it succeeded at the clock's time.
func finish(t *testing.T, b backend) claimed {
	t.Helper()
	c := mustClaim(t, b, "w1", b.clock.Now())
	if _, _, err := complete(t, b, c, OutcomeSucceeded, `{}`); err != nil {
		t.Fatal(err)
	}
	return c
}

func testPurgeFinished(t *testing.T, b backend) {
	ctx := context.Background()
	t0 := b.clock.Now()
	old := enqueue(t, b.store, NewJob{IdempotencyKey: "k-old"})
	finish(t, b)
	undelivered := enqueue(t, b.store, NewJob{WebhookURL: "https://example.com/h"})
	finish(t, b)
	delivered := enqueue(t, b.store, NewJob{WebhookURL: "https://example.com/h"})
	finish(t, b)
	d, ok, err := b.store.ClaimDelivery(ctx, t0)
	for ok && d.Job.ID != delivered.ID {
		d, ok, err = b.store.ClaimDelivery(ctx, t0)
	}
	if err != nil || !ok {
		t.Fatalf("claim delivery: %v %v", ok, err)
	}
	if err := b.store.RecordDeliveryAttempt(ctx, d.Delivery.ID, Attempt{At: t0.UnixMilli(), StatusCode: 200}, DeliveryDelivered, t0); err != nil {
		t.Fatal(err)
	}
	running := enqueue(t, b.store, NewJob{})
	mustClaim(t, b, "w1", t0)
	b.clock.Set(t0.Add(time.Hour))
	recent := enqueue(t, b.store, NewJob{})
	finish(t, b)

	// Kept for 30 minutes: what finished at t0 goes, unless its webhook is
	// still pending; the running job and the recent one stay.
	removed, _, err := b.store.Purge(ctx, t0.Add(30*time.Minute), t0.Add(-time.Hour))
	if err != nil || removed != 2 {
		t.Fatalf("purge: removed %d, %v; want 2", removed, err)
	}
	for _, id := range []string{old.ID, delivered.ID} {
		if _, err := b.store.Get(ctx, "alice", id); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s still there: %v", id, err)
		}
	}
	for _, id := range []string{undelivered.ID, running.ID, recent.ID} {
		get(t, b.store, id)
	}
	// The removed job's idempotency key went with it: the key is free.
	if _, existing, err := b.store.Enqueue(ctx, NewJob{Owner: "alice", Type: TypeSandboxRun, IdempotencyKey: "k-old",
		Input: json.RawMessage(`{"other":true}`), MaxAttempts: 1}); err != nil || existing {
		t.Errorf("reusing the removed job's key: existing=%v %v", existing, err)
	}
	if removed, _, err := b.store.Purge(ctx, t0.Add(30*time.Minute), t0.Add(-time.Hour)); err != nil || removed != 0 {
		t.Errorf("second purge removed %d, %v", removed, err)
	}
}

func testPurgeIdempotencyKeys(t *testing.T, b backend) {
	ctx := context.Background()
	t0 := b.clock.Now()
	first := enqueue(t, b.store, NewJob{IdempotencyKey: "k"})
	b.clock.Set(t0.Add(2 * time.Hour))
	enqueue(t, b.store, NewJob{IdempotencyKey: "k-new"})
	_, forgotten, err := b.store.Purge(ctx, t0.Add(-time.Hour), t0.Add(time.Hour))
	if err != nil || forgotten != 1 {
		t.Fatalf("purge: forgot %d keys, %v; want 1", forgotten, err)
	}
	// The old key may be used again and makes a new job; the old job
	// stays, and the recent key is still honoured.
	again, existing, err := b.store.Enqueue(ctx, NewJob{Owner: "alice", Type: TypeSandboxRun, IdempotencyKey: "k",
		Input: json.RawMessage(`{"other":true}`), MaxAttempts: 1})
	if err != nil || existing || again.ID == first.ID {
		t.Errorf("reusing a forgotten key: %+v existing=%v %v", again, existing, err)
	}
	get(t, b.store, first.ID)
	if _, existing, err := b.store.Enqueue(ctx, NewJob{Owner: "alice", Type: TypeSandboxRun, IdempotencyKey: "k-new",
		Input: json.RawMessage(`{"language":"python","code":"print(1)"}`), MaxAttempts: 3}); err != nil || !existing {
		t.Errorf("a recent key was forgotten: existing=%v %v", existing, err)
	}
}
