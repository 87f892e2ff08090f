package jobs

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// claimed is what a worker learns when it claims a job.
type claimed struct {
	ID, Token string
	Attempts  int
	// ack is the Redis worker's XACK of its stream entry, done only after
	// the gateway accepted the callback; nil for SQLite.
	ack func()
}

// claimer stands in for the Python worker: it claims jobs exactly as
// api/jobs.md says a worker does, so the suite checks the gateway's side
// against the contract rather than against itself.
type claimer interface {
	claim(t testing.TB, worker string, now time.Time, lease time.Duration) (claimed, bool)
}

// sqliteClaimer runs the contract's claim statement, literally, on its own
// connection to the database file, as a worker process would.
type sqliteClaimer struct{ db *sql.DB }

const sqliteClaim = `
UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = :worker,
       lease_token = :token, lease_expires_at = :now + :lease_ms, updated_at = :now
 WHERE id = (SELECT id FROM jobs
              WHERE (status = 'queued' AND available_at <= :now)
                 OR (status = 'running' AND lease_expires_at <= :now AND attempts < max_attempts)
              ORDER BY available_at LIMIT 1)
RETURNING id, type, input, attempts, max_attempts, request_id;`

func (c sqliteClaimer) claim(t testing.TB, worker string, now time.Time, lease time.Duration) (claimed, bool) {
	token := NewLeaseToken()
	var id, typ, input, requestID string
	var attempts, maxAttempts int
	err := c.db.QueryRow(sqliteClaim, sql.Named("worker", worker), sql.Named("token", token),
		sql.Named("now", now.UnixMilli()), sql.Named("lease_ms", lease.Milliseconds())).
		Scan(&id, &typ, &input, &attempts, &maxAttempts, &requestID)
	if errors.Is(err, sql.ErrNoRows) {
		return claimed{}, false
	}
	if err != nil {
		t.Errorf("claim: %v", err)
		return claimed{}, false
	}
	return claimed{ID: id, Token: token, Attempts: attempts}, true
}

// redisClaimScript is the claim rule applied to a job hash: queued and
// available, or running with an expired lease and attempts left. KEYS job
// hash, leases; ARGV worker, token, now, lease ms, job id.
var redisClaimScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'status', 'available_at', 'lease_expires_at', 'attempts', 'max_attempts')
local now = tonumber(ARGV[3])
local ok = (f[1] == 'queued' and tonumber(f[2]) <= now) or
  (f[1] == 'running' and tonumber(f[3]) <= now and tonumber(f[4]) < tonumber(f[5]))
if not ok then return false end
local exp = string.format('%d', now + tonumber(ARGV[4]))
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'lease_owner', ARGV[1], 'lease_token', ARGV[2],
  'lease_expires_at', exp, 'updated_at', ARGV[3])
redis.call('ZADD', KEYS[2], exp, ARGV[5])
return attempts
`)

// redisClaimer reads the stream with the workers' group (new entries, then
// entries idle for minIdle, as XAUTOCLAIM does for dead workers) and
// applies the claim rule, acknowledging entries the rule refuses.
type redisClaimer struct {
	client  *redis.Client
	minIdle time.Duration
}

func (c redisClaimer) claim(t testing.TB, worker string, now time.Time, lease time.Duration) (claimed, bool) {
	ctx := context.Background()
	for range 100 {
		var msgs []redis.XMessage
		streams, err := c.client.XReadGroup(ctx, &redis.XReadGroupArgs{Group: RedisGroup, Consumer: worker,
			Streams: []string{redisStream, ">"}, Count: 1, Block: -1}).Result()
		switch {
		case err == nil && len(streams) > 0:
			msgs = streams[0].Messages
		case err != nil && !errors.Is(err, redis.Nil):
			t.Errorf("XREADGROUP: %v", err)
			return claimed{}, false
		}
		if len(msgs) == 0 {
			msgs, _, err = c.client.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: redisStream, Group: RedisGroup,
				Consumer: worker, MinIdle: c.minIdle, Start: "0-0", Count: 1}).Result()
			if err != nil {
				t.Errorf("XAUTOCLAIM: %v", err)
				return claimed{}, false
			}
		}
		if len(msgs) == 0 {
			return claimed{}, false
		}
		entry := msgs[0].ID
		id, _ := msgs[0].Values["id"].(string)
		ack := func() { c.client.XAck(ctx, redisStream, RedisGroup, entry) }
		token := NewLeaseToken()
		attempts, err := redisClaimScript.Run(ctx, c.client, []string{redisJobKey(id), redisLeases},
			worker, token, now.UnixMilli(), lease.Milliseconds(), id).Int()
		if errors.Is(err, redis.Nil) {
			ack() // finished, or another worker holds a live lease
			if c.minIdle > 0 {
				return claimed{}, false
			}
			continue
		}
		if err != nil {
			t.Errorf("claim script: %v", err)
			return claimed{}, false
		}
		return claimed{ID: id, Token: token, Attempts: attempts, ack: ack}, true
	}
	return claimed{}, false
}
