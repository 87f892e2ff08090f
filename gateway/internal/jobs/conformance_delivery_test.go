package jobs

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// finishedWithWebhook returns a succeeded job with a pending delivery.
func finishedWithWebhook(t *testing.T, b backend) Job {
	t.Helper()
	j := enqueue(t, b.store, NewJob{WebhookURL: "https://example.com/h"})
	c := mustClaim(t, b, "w", b.clock.Now())
	if _, _, err := complete(t, b, c, OutcomeSucceeded, `{"ok":true}`); err != nil {
		t.Fatal(err)
	}
	return j
}

func testDeliveryClaim(t *testing.T, b backend) {
	ctx := context.Background()
	j := finishedWithWebhook(t, b)
	now := b.clock.Now()
	var wg sync.WaitGroup
	results := make([]bool, 2)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, ok, err := b.store.ClaimDelivery(ctx, now)
			if err != nil {
				t.Error(err)
			}
			if ok && (d.Job.ID != j.ID || d.Delivery.ID != DeliveryID(j.ID) || d.Job.Owner != "alice" ||
				d.Delivery.URL != "https://example.com/h" || d.Job.Status != StatusSucceeded) {
				t.Errorf("claimed %+v", d)
			}
			results[i] = ok
		}()
	}
	wg.Wait()
	if results[0] == results[1] {
		t.Fatalf("claims %v: want exactly one winner", results)
	}
	if _, ok, _ := b.store.ClaimDelivery(ctx, now.Add(DeliveryLease-time.Millisecond)); ok {
		t.Error("claimed while the claim lease was live")
	}
	if _, ok, _ := b.store.ClaimDelivery(ctx, now.Add(DeliveryLease)); !ok {
		t.Error("not claimable after the claim lease expired")
	}
}

func testDeliveryAttempts(t *testing.T, b backend) {
	ctx := context.Background()
	j := finishedWithWebhook(t, b)
	now := b.clock.Now()
	d, ok, err := b.store.ClaimDelivery(ctx, now)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	next := now.Add(10 * time.Second)
	a1 := Attempt{At: now.UnixMilli(), StatusCode: 500, DurationMS: 12}
	if err := b.store.RecordDeliveryAttempt(ctx, d.Delivery.ID, a1, DeliveryPending, next); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := b.store.ClaimDelivery(ctx, next.Add(-time.Millisecond)); ok {
		t.Error("claimed before its next attempt time")
	}
	d, ok, err = b.store.ClaimDelivery(ctx, next)
	if err != nil || !ok || len(d.Delivery.Attempts) != 1 || d.Delivery.Attempts[0] != a1 {
		t.Fatalf("second claim: %+v %v %v", d, ok, err)
	}
	a2 := Attempt{At: next.UnixMilli(), Error: "connection refused", DurationMS: 3}
	a3 := Attempt{At: next.UnixMilli(), StatusCode: 204, DurationMS: 5}
	if err := b.store.RecordDeliveryAttempt(ctx, d.Delivery.ID, a2, DeliveryPending, next); err != nil {
		t.Fatal(err)
	}
	if err := b.store.RecordDeliveryAttempt(ctx, d.Delivery.ID, a3, DeliveryDelivered, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := b.store.ClaimDelivery(ctx, next.Add(time.Hour)); ok {
		t.Error("a delivered webhook was claimed again")
	}
	got := get(t, b.store, j.ID).Webhook
	if got == nil || got.Status != DeliveryDelivered || len(got.Attempts) != 3 || got.Attempts[1] != a2 || got.Attempts[2] != a3 {
		t.Errorf("delivery %+v", got)
	}
}

func testConcurrentClaims(t *testing.T, b backend) {
	const jobs, workers = 40, 8
	for range jobs {
		enqueue(t, b.store, NewJob{})
	}
	var mu sync.Mutex // guards claims
	claims := map[string]int{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, ok := b.claimer.claim(t, fmt.Sprintf("w%d", w), b.clock.Now(), lease)
				if !ok {
					return
				}
				mu.Lock()
				claims[c.ID]++
				mu.Unlock()
				if _, _, err := complete(t, b, c, OutcomeSucceeded, `{}`); err != nil {
					t.Errorf("complete %s: %v", c.ID, err)
				}
			}
		}()
	}
	wg.Wait()
	if len(claims) != jobs {
		t.Errorf("%d jobs claimed, want %d", len(claims), jobs)
	}
	for id, n := range claims {
		if n != 1 {
			t.Errorf("job %s claimed %d times", id, n)
		}
	}
}
