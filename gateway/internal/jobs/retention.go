package jobs

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Retention (api/jobs.md, "Retention"): the reaper removes finished jobs
// and forgets idempotency keys once they are older than the configured
// times, so the queue's store does not grow without bound.

// finishedFilter selects the finished jobs due for removal, oldest first:
// a job whose webhook is still being delivered waits for the delivery.
const finishedFilter = `SELECT id FROM jobs
	WHERE status IN ('succeeded', 'failed') AND updated_at < ?
	  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.job_id = jobs.id AND d.status = 'pending')
	ORDER BY updated_at, id LIMIT ?`

// Purge implements Store.
func (s *SQLite) Purge(ctx context.Context, finishedBefore, keysBefore time.Time) (int, int, error) {
	fb, kb := ms(finishedBefore), ms(keysBefore)
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback()
	// Deliveries first: they reference their job. Deleting them leaves the
	// filter's answer unchanged (none of them was pending).
	if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE job_id IN (`+finishedFilter+`)`,
		fb, PurgeBatch); err != nil {
		return 0, 0, fmt.Errorf("purge deliveries: %w", err)
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM jobs WHERE id IN (`+finishedFilter+`)`, fb, PurgeBatch)
	if err != nil {
		return 0, 0, fmt.Errorf("purge jobs: %w", err)
	}
	removed, _ := res.RowsAffected()
	res, err = tx.ExecContext(ctx, `UPDATE jobs SET idempotency_key = NULL WHERE id IN (SELECT id FROM jobs
		WHERE idempotency_key IS NOT NULL AND created_at < ? ORDER BY created_at, id LIMIT ?)`, kb, PurgeBatch)
	if err != nil {
		return 0, 0, fmt.Errorf("purge idempotency keys: %w", err)
	}
	forgotten, _ := res.RowsAffected()
	return int(removed), int(forgotten), tx.Commit()
}

// purgeScript removes finished jobs (their hash, delivery and idempotency
// key) and forgets old idempotency keys. KEYS finished, idempotency keys;
// ARGV finished before (ms), keys before (ms), batch, key prefix. Returns
// {jobs removed, keys forgotten}; a key removed with its job counts in
// neither, as in SQLite.
var purgeScript = redis.NewScript(`
local prefix, n = ARGV[4], tonumber(ARGV[3])
local jobs, keys = 0, 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, n)) do
  local j = prefix .. 'job:' .. id
  local d = prefix .. 'delivery:msg_' .. string.sub(id, 5)
  if redis.call('HGET', d, 'status') ~= 'pending' then
    local f = redis.call('HMGET', j, 'owner', 'idempotency_key')
    if f[2] then
      local k = prefix .. 'idem:' .. f[1] .. ':' .. f[2]
      if redis.call('GET', k) == id then
        redis.call('DEL', k)
        redis.call('ZREM', KEYS[2], k)
      end
    end
    redis.call('DEL', j, d)
    redis.call('ZREM', KEYS[1], id)
    jobs = jobs + 1
  end
end
for _, k in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2], 'LIMIT', 0, n)) do
  redis.call('DEL', k)
  redis.call('ZREM', KEYS[2], k)
  keys = keys + 1
end
return {jobs, keys}
`)

// Purge implements Store.
func (s *Redis) Purge(ctx context.Context, finishedBefore, keysBefore time.Time) (int, int, error) {
	res, err := purgeScript.Run(ctx, s.client, []string{redisFinished, redisIdemKeys},
		strconv.FormatInt(ms(finishedBefore), 10), strconv.FormatInt(ms(keysBefore), 10), PurgeBatch,
		RedisPrefix).Int64Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("purge: %w", err)
	}
	if len(res) != 2 {
		return 0, 0, fmt.Errorf("purge: unexpected reply %v", res)
	}
	return int(res[0]), int(res[1]), nil
}
