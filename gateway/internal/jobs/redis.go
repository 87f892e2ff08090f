package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis key names (api/jobs.md, "Scaled backend").
const (
	// RedisPrefix namespaces every key of the queue.
	RedisPrefix     = "trine:jobs:"
	redisStream     = RedisPrefix + "stream"
	redisDelayed    = RedisPrefix + "delayed"
	redisLeases     = RedisPrefix + "leases"
	redisDeliveries = RedisPrefix + "deliveries"
	// redisFinished holds finished job ids, score = when they finished,
	// and redisIdemKeys idempotency key names, score = when they were
	// taken: what retention removes, oldest first.
	redisFinished = RedisPrefix + "finished"
	redisIdemKeys = RedisPrefix + "idem_keys"
	// RedisGroup is the workers' consumer group on the stream.
	RedisGroup = "workers"
)

func redisJobKey(id string) string      { return RedisPrefix + "job:" + id }
func redisDeliveryKey(id string) string { return RedisPrefix + "delivery:" + id }
func redisIdemKey(owner, key string) string {
	return RedisPrefix + "idem:" + owner + ":" + key
}

// Redis is the scaled backend: job records in hashes, runnable jobs in a
// stream read by the workers' consumer group, and every multi-key change in
// one Lua script, so each is atomic.
type Redis struct {
	client redis.UniversalClient
	now    func() time.Time
	// backfillPoll is how often a gateway waiting for another's Backfill
	// looks whether it is done.
	backfillPoll time.Duration
}

// NewRedis returns a store on client; now is the clock (nil: time.Now).
// Close closes the client. Call EnsureGroup before relying on workers.
func NewRedis(client redis.UniversalClient, now func() time.Time) *Redis {
	if now == nil {
		now = time.Now
	}
	return &Redis{client: client, now: now, backfillPoll: 5 * time.Second}
}

// OpenRedis is NewRedis followed by EnsureGroup.
func OpenRedis(ctx context.Context, client redis.UniversalClient, now func() time.Time) (*Redis, error) {
	s := NewRedis(client, now)
	if err := s.EnsureGroup(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// EnsureGroup creates the stream and the workers' consumer group unless
// they exist (whichever side starts first creates them; BUSYGROUP is fine).
func (s *Redis) EnsureGroup(ctx context.Context) error {
	err := s.client.XGroupCreateMkStream(ctx, redisStream, RedisGroup, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("jobs: creating the consumer group: %w", err)
	}
	return nil
}

// Close implements Store.
func (s *Redis) Close() error { return s.client.Close() }

// jobFields flattens a job into hash field/value pairs; empty optional
// fields are left out (absent means null).
func jobFields(j Job) []any {
	f := []any{"id", j.ID, "owner", j.Owner, "type", j.Type, "input", string(j.Input),
		"request_hash", j.RequestHash, "status", j.Status, "attempts", j.Attempts,
		"max_attempts", j.MaxAttempts, "available_at", j.AvailableAt, "request_id", j.RequestID,
		"created_at", j.CreatedAt, "updated_at", j.UpdatedAt}
	for _, kv := range [][2]string{{"webhook_url", j.WebhookURL}, {"idempotency_key", j.IdempotencyKey}} {
		if kv[1] != "" {
			f = append(f, kv[0], kv[1])
		}
	}
	return f
}

func parseJob(h map[string]string) (Job, error) {
	if len(h) == 0 || h["id"] == "" {
		return Job{}, ErrNotFound
	}
	j := Job{ID: h["id"], Owner: h["owner"], Type: h["type"], Input: json.RawMessage(h["input"]),
		WebhookURL: h["webhook_url"], IdempotencyKey: h["idempotency_key"], RequestHash: h["request_hash"],
		Status: h["status"], LeaseOwner: h["lease_owner"], LeaseToken: h["lease_token"], RequestID: h["request_id"]}
	if v, ok := h["result"]; ok {
		j.Result = json.RawMessage(v)
	}
	if v, ok := h["error"]; ok {
		j.Error = json.RawMessage(v)
	}
	var errs []error
	num := func(name string) int64 {
		v, ok := h[name]
		if !ok {
			return 0
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("field %s: %w", name, err))
		}
		return n
	}
	j.Attempts, j.MaxAttempts = int(num("attempts")), int(num("max_attempts"))
	j.AvailableAt, j.LeaseExpiresAt = num("available_at"), num("lease_expires_at")
	j.CreatedAt, j.UpdatedAt = num("created_at"), num("updated_at")
	if err := errors.Join(errs...); err != nil {
		return Job{}, fmt.Errorf("job %s: %w", j.ID, err)
	}
	return j, nil
}

func parseDelivery(h map[string]string) (Delivery, error) {
	if len(h) == 0 || h["id"] == "" {
		return Delivery{}, ErrNotFound
	}
	d := Delivery{ID: h["id"], JobID: h["job_id"], URL: h["url"], Status: h["status"]}
	var errs []error
	for name, dst := range map[string]*int64{"next_attempt_at": &d.NextAttemptAt,
		"lease_expires_at": &d.LeaseExpiresAt, "created_at": &d.CreatedAt, "updated_at": &d.UpdatedAt} {
		if v, ok := h[name]; ok {
			n, err := strconv.ParseInt(v, 10, 64)
			errs = append(errs, err)
			*dst = n
		}
	}
	if v := h["attempts"]; v != "" {
		errs = append(errs, json.Unmarshal([]byte(v), &d.Attempts))
	}
	if err := errors.Join(errs...); err != nil {
		return Delivery{}, fmt.Errorf("delivery %s: %w", d.ID, err)
	}
	return d, nil
}

func (s *Redis) job(ctx context.Context, id string) (Job, error) {
	h, err := s.client.HGetAll(ctx, redisJobKey(id)).Result()
	if err != nil {
		return Job{}, err
	}
	return parseJob(h)
}

// Enqueue implements Store.
func (s *Redis) Enqueue(ctx context.Context, n NewJob) (Job, bool, error) {
	now := ms(s.now())
	j := Job{ID: NewID(), Owner: n.Owner, Type: n.Type, Input: n.Input, WebhookURL: n.WebhookURL,
		IdempotencyKey: n.IdempotencyKey, RequestHash: RequestHash(n.Type, n.WebhookURL, n.Input),
		Status: StatusQueued, MaxAttempts: n.MaxAttempts, AvailableAt: now, RequestID: n.RequestID,
		CreatedAt: now, UpdatedAt: now}
	keys := []string{redisJobKey(j.ID), redisStream, redisIdemKeys}
	if j.IdempotencyKey != "" {
		keys = append(keys, redisIdemKey(j.Owner, j.IdempotencyKey))
	}
	res, err := enqueueScript.Run(ctx, s.client, keys, append([]any{j.ID, now}, jobFields(j)...)...).Slice()
	if err != nil {
		return Job{}, false, fmt.Errorf("enqueue: %w", err)
	}
	if len(res) != 2 {
		return Job{}, false, fmt.Errorf("enqueue: unexpected reply %v", res)
	}
	if stored, _ := res[0].(int64); stored == 1 {
		return j, false, nil
	}
	id, _ := res[1].(string)
	existing, err := s.job(ctx, id)
	if err != nil {
		return Job{}, false, fmt.Errorf("enqueue: idempotent job %s: %w", id, err)
	}
	if existing.RequestHash != j.RequestHash {
		return Job{}, false, ErrIdempotencyMismatch
	}
	return existing, true, nil
}

// Get implements Store.
func (s *Redis) Get(ctx context.Context, owner, id string) (Job, error) {
	j, err := s.job(ctx, id)
	if err != nil {
		return Job{}, err
	}
	if j.Owner != owner {
		return Job{}, ErrNotFound
	}
	if j.WebhookURL != "" {
		h, err := s.client.HGetAll(ctx, redisDeliveryKey(DeliveryID(id))).Result()
		if err != nil {
			return Job{}, err
		}
		d, err := parseDelivery(h)
		switch {
		case err == nil:
			j.Webhook = &d
		case !errors.Is(err, ErrNotFound):
			return Job{}, err
		}
	}
	return j, nil
}

// completeArgs are the keys and arguments of completeScript for one
// callback at now (ms).
func completeArgs(id string, o Outcome, now string) ([]string, []any) {
	return []string{redisJobKey(id), redisLeases, redisDelayed, redisDeliveries, redisFinished},
		[]any{id, o.LeaseToken, o.Kind, string(o.Result), string(o.Error), now,
			strconv.FormatFloat(retryJitter(), 'f', 6, 64), RedisPrefix}
}

// completeVerdict turns completeScript's answer into whether the callback
// was applied, or the store's error for it.
func completeVerdict(res string) (bool, error) {
	switch res {
	case "not_found":
		return false, ErrNotFound
	case "conflict":
		return false, ErrConflict
	}
	return res == "applied", nil
}

// CompleteMany implements Store in two round trips however many items:
// the callbacks' scripts, in order and each atomic on its own (which is all
// the contract asks), in one pipeline, then the jobs they settled in
// another.
func (s *Redis) CompleteMany(ctx context.Context, items []Completion) ([]Completed, error) {
	answers, err := s.runCompletions(ctx, items)
	if err != nil {
		return nil, err
	}
	results := make([]Completed, len(items))
	pipe := s.client.Pipeline()
	reads := make([]*redis.MapStringStringCmd, len(items))
	for i, c := range items {
		applied, err := completeVerdict(answers[i])
		results[i] = Completed{Applied: applied, Err: err}
		if err == nil {
			reads[i] = pipe.HGetAll(ctx, redisJobKey(c.ID))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("complete: read jobs: %w", err)
	}
	for i, read := range reads {
		if read == nil {
			continue
		}
		// A job gone since its script ran (retention) is that item's
		// answer, not the batch's.
		j, err := parseJob(read.Val())
		switch {
		case errors.Is(err, ErrNotFound):
			results[i].Err = err
		case err != nil:
			return nil, fmt.Errorf("complete %s: %w", items[i].ID, err)
		}
		results[i].Job = j
	}
	return results, nil
}

// runCompletions runs completeScript for every item in one pipeline and
// returns its answers. Scripts go by their hash; when Redis no longer has
// the script (a restart, SCRIPT FLUSH), it is loaded and the items it
// refused, which did not run, are sent again in order.
func (s *Redis) runCompletions(ctx context.Context, items []Completion) ([]string, error) {
	now := strconv.FormatInt(ms(s.now()), 10)
	answers := make([]string, len(items))
	pending := make([]int, len(items))
	for i := range pending {
		pending[i] = i
	}
	for attempt := 0; len(pending) > 0; attempt++ {
		pipe := s.client.Pipeline()
		cmds := make([]*redis.Cmd, len(pending))
		for k, i := range pending {
			keys, args := completeArgs(items[i].ID, items[i].Outcome, now)
			cmds[k] = completeScript.EvalSha(ctx, pipe, keys, args...)
		}
		_, _ = pipe.Exec(ctx) // each command's error is looked at below
		var missing []int
		for k, i := range pending {
			res, err := cmds[k].Text()
			switch {
			case err == nil:
				answers[i] = res
			case redis.HasErrorPrefix(err, "NOSCRIPT") && attempt == 0:
				missing = append(missing, i)
			default:
				return nil, fmt.Errorf("complete %s: %w", items[i].ID, err)
			}
		}
		if len(missing) > 0 {
			if err := completeScript.Load(ctx, s.client).Err(); err != nil {
				return nil, fmt.Errorf("complete: load script: %w", err)
			}
		}
		pending = missing
	}
	return answers, nil
}

// Reap implements Store.
func (s *Redis) Reap(ctx context.Context, now time.Time) ([]Job, error) {
	ids, err := reapScript.Run(ctx, s.client, []string{redisLeases, redisDelayed, redisStream, redisDeliveries, redisFinished},
		strconv.FormatInt(ms(now), 10), string(exhaustedError), RedisPrefix).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("reap: %w", err)
	}
	failed := make([]Job, 0, len(ids))
	for _, id := range ids {
		j, err := s.job(ctx, id)
		if err != nil {
			return failed, err
		}
		failed = append(failed, j)
	}
	return failed, nil
}

// ClaimDelivery implements Store.
func (s *Redis) ClaimDelivery(ctx context.Context, now time.Time) (ClaimedDelivery, bool, error) {
	id, err := claimDeliveryScript.Run(ctx, s.client, []string{redisDeliveries},
		strconv.FormatInt(ms(now), 10), DeliveryLease.Milliseconds(), RedisPrefix).Text()
	if errors.Is(err, redis.Nil) {
		return ClaimedDelivery{}, false, nil
	}
	if err != nil {
		return ClaimedDelivery{}, false, fmt.Errorf("claim delivery: %w", err)
	}
	h, err := s.client.HGetAll(ctx, redisDeliveryKey(id)).Result()
	if err != nil {
		return ClaimedDelivery{}, false, err
	}
	d, err := parseDelivery(h)
	if err != nil {
		return ClaimedDelivery{}, false, err
	}
	j, err := s.job(ctx, d.JobID)
	if err != nil {
		return ClaimedDelivery{}, false, fmt.Errorf("claim delivery %s: job: %w", id, err)
	}
	return ClaimedDelivery{Delivery: d, Job: j}, true, nil
}

// RecordDeliveryAttempt implements Store.
func (s *Redis) RecordDeliveryAttempt(ctx context.Context, id string, a Attempt, status string, next time.Time) error {
	raw, err := json.Marshal(a)
	if err != nil {
		return err
	}
	nextMS := ms(next)
	if status != DeliveryPending {
		nextMS = a.At
	}
	err = recordAttemptScript.Run(ctx, s.client, []string{redisDeliveryKey(id), redisDeliveries},
		string(raw), status, nextMS, ms(s.now()), id).Err()
	if err != nil {
		return fmt.Errorf("record delivery attempt %s: %w", id, err)
	}
	return nil
}
