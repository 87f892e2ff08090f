package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// gcraScript is GCRA as one atomic step. It reads the clock of the Redis
// server, not of the caller, so gateway replicas with skewed clocks still
// share one limit. Times are integer microseconds; a TAT in the past is
// treated as now, and the key expires once the TAT has passed, since it
// then carries no information.
//
// KEYS[1] the TAT key; ARGV[1] emission interval, ARGV[2] tolerance (µs).
// Returns {allowed, remaining, retry_after_us, reset_us}.
var gcraScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((tolerance - (new_tat - now)) / interval), 0, new_tat - now}
`)

// Redis is a limiter whose state lives in Redis, so every gateway replica
// using the same Redis enforces one limit together.
type Redis struct {
	client redis.Scripter
	prefix string
}

// NewRedis returns a limiter using client, storing its keys under prefix.
func NewRedis(client redis.Scripter, prefix string) *Redis {
	return &Redis{client: client, prefix: prefix}
}

// Allow implements Limiter. The script is sent by hash (EVALSHA) and only
// in full when Redis does not know it yet, e.g. after a restart.
func (l *Redis) Allow(ctx context.Context, key string, rule Rule) (Decision, error) {
	res, err := gcraScript.Run(ctx, l.client, []string{l.prefix + key},
		rule.interval().Microseconds(), rule.tolerance().Microseconds()).Int64Slice()
	if err != nil {
		return Decision{}, fmt.Errorf("redis rate limit: %w", err)
	}
	if len(res) != 4 {
		return Decision{}, fmt.Errorf("redis rate limit: unexpected reply %v", res)
	}
	return Decision{
		Allowed:    res[0] == 1,
		Limit:      rule.Burst,
		Remaining:  int(res[1]),
		RetryAfter: time.Duration(res[2]) * time.Microsecond,
		Reset:      time.Duration(res[3]) * time.Microsecond,
	}, nil
}
