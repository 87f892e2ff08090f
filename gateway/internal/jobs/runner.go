package jobs

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Intervals of the background loops.
const (
	// DeliveryPoll is how often due deliveries are looked for (other
	// gateways' completions, retries coming due).
	DeliveryPoll = 200 * time.Millisecond
	// ReapInterval is how often expired leases and delayed retries are
	// handled.
	ReapInterval = time.Second
	// PurgeInterval is how often retention removes old finished jobs and
	// idempotency keys.
	PurgeInterval = time.Minute
	// maxConcurrentSends bounds the webhook attempts in flight.
	maxConcurrentSends = 8
)

// Runner runs the gateway's background work on the queue: delivering
// webhooks and reaping expired leases. Build it with NewRunner.
type Runner struct {
	store  Store
	sender *Sender
	log    *slog.Logger
	// OnReaped, if set, is told about every job the reaper failed.
	OnReaped func(Job)
	// Retention, if set, is how long finished jobs and idempotency keys
	// are kept before the reaper removes them; zero keeps them.
	Retention Retention
	// OnAttempt, if set, is told the outcome of every delivery attempt:
	// delivered, failed (given up) or retrying.
	OnAttempt func(outcome string)
	wake      chan struct{}
}

// Retention says how long finished jobs (counted from when they finished)
// and idempotency keys (from the enqueue) are kept.
type Retention struct {
	Jobs, IdempotencyKeys time.Duration
}

// NewRunner returns a runner over store sending webhooks with sender.
func NewRunner(store Store, sender *Sender, log *slog.Logger) *Runner {
	return &Runner{store: store, sender: sender, log: log, wake: make(chan struct{}, 1)}
}

// Wake makes the delivery loop look for due deliveries now, without waiting
// for its next poll: a job just finished in this process.
func (r *Runner) Wake() {
	select {
	case r.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Run runs both loops until ctx is done, then waits for attempts in flight
// to end (they are cancelled; an interrupted attempt is not recorded, and
// its claim expires so another gateway retries it).
func (r *Runner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.reapLoop(ctx) }()
	go func() { defer wg.Done(); r.deliveryLoop(ctx) }()
	if b, ok := r.store.(backfiller); ok {
		wg.Add(1)
		go func() { defer wg.Done(); r.backfill(ctx, b) }()
	}
	wg.Wait()
}

// backfiller is a store whose data from before its retention indexes
// existed must be indexed once (Redis.Backfill).
type backfiller interface {
	Backfill(ctx context.Context) (BackfillResult, error)
}

// backfill runs beside the loops, as it may scan a large store: until it
// is done, retention only misses the oldest jobs, which the purge after it
// removes.
func (r *Runner) backfill(ctx context.Context, b backfiller) {
	start := time.Now()
	res, err := b.Backfill(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		r.log.WarnContext(ctx, "jobs retention backfill failed; the next start retries it", "error", err.Error(),
			"jobs_added", res.Jobs, "idempotency_keys_added", res.IdempotencyKeys)
	case err == nil && res.Ran:
		r.log.InfoContext(ctx, "jobs retention backfill done", "jobs_added", res.Jobs,
			"idempotency_keys_added", res.IdempotencyKeys, "duration_ms", time.Since(start).Milliseconds())
	}
}

func (r *Runner) reapLoop(ctx context.Context) {
	tick := time.NewTicker(ReapInterval)
	defer tick.Stop()
	var purged time.Time // zero: the first round purges too
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if time.Since(purged) >= PurgeInterval {
			purged = time.Now()
			r.purge(ctx, purged)
		}
		failed, err := r.store.Reap(ctx, time.Now())
		if err != nil {
			if ctx.Err() == nil {
				r.log.WarnContext(ctx, "jobs reaper failed", "error", err.Error())
			}
			continue
		}
		for _, j := range failed {
			r.log.WarnContext(ctx, "job failed: lease expired with attempts exhausted", "job_id", j.ID,
				"attempts", j.Attempts, "request_id", j.RequestID)
			if r.OnReaped != nil {
				r.OnReaped(j)
			}
		}
		if len(failed) > 0 {
			r.Wake()
		}
	}
}

// purge removes what retention no longer keeps, a batch at a time until
// none is left.
func (r *Runner) purge(ctx context.Context, now time.Time) {
	if r.Retention.Jobs <= 0 || r.Retention.IdempotencyKeys <= 0 {
		return
	}
	for ctx.Err() == nil {
		removed, forgotten, err := r.store.Purge(ctx, now.Add(-r.Retention.Jobs), now.Add(-r.Retention.IdempotencyKeys))
		if err != nil {
			if ctx.Err() == nil {
				r.log.WarnContext(ctx, "jobs retention failed", "error", err.Error())
			}
			return
		}
		if removed > 0 || forgotten > 0 {
			r.log.InfoContext(ctx, "jobs retention", "jobs_removed", removed, "idempotency_keys_removed", forgotten)
		}
		if removed < PurgeBatch && forgotten < PurgeBatch {
			return
		}
	}
}

func (r *Runner) deliveryLoop(ctx context.Context) {
	tick := time.NewTicker(DeliveryPoll)
	defer tick.Stop()
	sem := make(chan struct{}, maxConcurrentSends)
	var inFlight sync.WaitGroup
	defer inFlight.Wait()
	for {
		for ctx.Err() == nil {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			d, ok, err := r.store.ClaimDelivery(ctx, time.Now())
			if err != nil && ctx.Err() == nil {
				r.log.WarnContext(ctx, "claiming a webhook delivery failed", "error", err.Error())
			}
			if !ok {
				<-sem
				break
			}
			inFlight.Add(1)
			go func() {
				defer func() { <-sem; inFlight.Done() }()
				r.deliver(ctx, d)
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-r.wake:
		}
	}
}

// deliver makes one attempt at d and records it.
func (r *Runner) deliver(ctx context.Context, d ClaimedDelivery) {
	res := r.sender.Send(ctx, d)
	if ctx.Err() != nil {
		return // shutting down: the claim expires and the attempt is redone
	}
	if err := r.store.RecordDeliveryAttempt(ctx, d.Delivery.ID, res.Attempt, res.Status, res.Next); err != nil {
		r.log.WarnContext(ctx, "recording a webhook attempt failed", "delivery_id", d.Delivery.ID, "error", err.Error())
		return
	}
	outcome := map[string]string{DeliveryDelivered: "delivered", DeliveryFailed: "failed", DeliveryPending: "retrying"}[res.Status]
	if r.OnAttempt != nil {
		r.OnAttempt(outcome)
	}
	attrs := []any{"delivery_id", d.Delivery.ID, "job_id", d.Job.ID, "request_id", d.Job.RequestID,
		"outcome", outcome, "status_code", res.Attempt.StatusCode, "duration_ms", res.Attempt.DurationMS}
	if res.Attempt.Error != "" {
		attrs = append(attrs, "error", res.Attempt.Error)
	}
	if res.Status == DeliveryPending {
		attrs = append(attrs, "next_attempt_at", res.Next.UTC().Format(time.RFC3339))
	}
	r.log.InfoContext(ctx, "webhook attempt", attrs...)
}
