package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Retention on Redis works from the finished and idempotency-key sorted
// sets, but stores older than those sets hold finished jobs and keys that
// are in neither, which the reaper would keep for ever. Backfill adds them
// once; a marker key makes later starts skip the scan.
const (
	redisBackfillDone = RedisPrefix + "backfill:v1"
	redisBackfillLock = RedisPrefix + "backfill:v1:lock"
	// backfillLockTTL frees the lock of a gateway that died while holding
	// it, so that another one takes the work over.
	backfillLockTTL = 30 * time.Second
	// backfillBatch is the SCAN count and so about the keys one script
	// handles: short enough not to stall the server for other clients.
	backfillBatch = 500
)

// BackfillResult says what Backfill did.
type BackfillResult struct {
	// Ran is false when an earlier run (maybe another gateway's) had
	// already finished the backfill.
	Ran bool
	// Jobs and IdempotencyKeys count the entries added to the retention
	// sets.
	Jobs, IdempotencyKeys int
}

// backfillJobsScript adds finished jobs missing from the finished set,
// scored by their last update (when they finished: a finished job is not
// updated again). Status is read here, not by the caller, so that a job
// finishing or being removed meanwhile is judged as it is now. KEYS
// finished, then job hashes. Returns how many were added.
var backfillJobsScript = redis.NewScript(`
local added = 0
for i = 2, #KEYS do
  local f = redis.call('HMGET', KEYS[i], 'id', 'status', 'updated_at')
  if f[1] and (f[2] == 'succeeded' or f[2] == 'failed') then
    added = added + redis.call('ZADD', KEYS[1], 'NX', f[3] or 0, f[1])
  end
end
return added
`)

// backfillIdemKeysScript adds idempotency keys missing from their set,
// scored by their job's creation, when the key was taken. A key whose job
// is gone can only fail its next request, so it scores 0 and goes at the
// next purge. KEYS idempotency keys set, then keys; ARGV key prefix.
// Returns how many were added.
var backfillIdemKeysScript = redis.NewScript(`
local added = 0
for i = 2, #KEYS do
  local id = redis.call('GET', KEYS[i])
  if id and not redis.call('ZSCORE', KEYS[1], KEYS[i]) then
    local created = redis.call('HGET', ARGV[1] .. 'job:' .. id, 'created_at')
    added = added + redis.call('ZADD', KEYS[1], 'NX', created or 0, KEYS[i])
  end
end
return added
`)

// backfillLockScript extends the lock by ARGV[2] ms, or releases it when
// that is 0, only if it still holds this run's token ARGV[1]. KEYS lock.
var backfillLockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`)

// Backfill adds to the retention sets the finished jobs and idempotency
// keys they miss, scanning the keyspace a batch at a time, then marks the
// work done. Gateways starting together take turns through a lock: the
// others wait, then find the marker. Running twice at once (a lock that
// expired under a stalled holder) only repeats work: ZADD NX keeps the
// first score. It returns when done or ctx ends.
func (s *Redis) Backfill(ctx context.Context) (BackfillResult, error) {
	token := NewLeaseToken()
	for {
		locked, err := s.client.SetNX(ctx, redisBackfillLock, token, backfillLockTTL).Result()
		if err != nil {
			return BackfillResult{}, fmt.Errorf("backfill lock: %w", err)
		}
		// Checked after taking the lock: a run that finished just before
		// would otherwise be repeated in full.
		done, err := s.client.Exists(ctx, redisBackfillDone).Result()
		if err != nil || done == 1 {
			if locked {
				s.unlockBackfill(ctx, token)
			}
			if err != nil {
				return BackfillResult{}, fmt.Errorf("backfill marker: %w", err)
			}
			return BackfillResult{}, nil
		}
		if locked {
			break
		}
		select {
		case <-ctx.Done():
			return BackfillResult{}, ctx.Err()
		case <-time.After(s.backfillPoll):
		}
	}
	defer s.unlockBackfill(ctx, token)
	res := BackfillResult{Ran: true}
	var err error
	if res.Jobs, err = s.backfillScan(ctx, token, redisJobKey("*"), redisFinished, backfillJobsScript); err != nil {
		return res, fmt.Errorf("backfill finished jobs: %w", err)
	}
	if res.IdempotencyKeys, err = s.backfillScan(ctx, token, redisIdemKey("*", "*"), redisIdemKeys,
		backfillIdemKeysScript); err != nil {
		return res, fmt.Errorf("backfill idempotency keys: %w", err)
	}
	if err := s.client.Set(ctx, redisBackfillDone, ms(s.now()), 0).Err(); err != nil {
		return res, fmt.Errorf("backfill marker: %w", err)
	}
	return res, nil
}

// backfillScan runs script on the keys matching pattern, a SCAN batch at a
// time, keeping the lock alive between batches, and returns how many
// entries it added to set.
func (s *Redis) backfillScan(ctx context.Context, token, pattern, set string, script *redis.Script) (int, error) {
	added := 0
	var cursor uint64
	for {
		keys, next, err := s.client.Scan(ctx, cursor, pattern, backfillBatch).Result()
		if err != nil {
			return added, err
		}
		if len(keys) > 0 {
			n, err := script.Run(ctx, s.client, append([]string{set}, keys...), RedisPrefix).Int()
			if err != nil {
				return added, err
			}
			added += n
		}
		// Losing the lock after a stall is harmless (see Backfill), so
		// the answer is not checked.
		if err := backfillLockScript.Run(ctx, s.client, []string{redisBackfillLock}, token,
			backfillLockTTL.Milliseconds()).Err(); err != nil {
			return added, err
		}
		if cursor = next; cursor == 0 {
			return added, nil
		}
	}
}

// unlockBackfill releases the lock at once rather than leaving waiting
// gateways until it expires, even when ctx has ended.
func (s *Redis) unlockBackfill(ctx context.Context, token string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = backfillLockScript.Run(ctx, s.client, []string{redisBackfillLock}, token, 0).Err()
}
