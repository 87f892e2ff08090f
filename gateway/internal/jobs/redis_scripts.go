package jobs

import "github.com/redis/go-redis/v9"

// createDeliveryLua defines create_delivery, which the scripts finishing a
// job share: it creates the job's delivery once and schedules it now.
const createDeliveryLua = `
local function create_delivery(prefix, deliveries, job_id, url, now)
  local msg = 'msg_' .. string.sub(job_id, 5)
  local d = prefix .. 'delivery:' .. msg
  if redis.call('HSETNX', d, 'id', msg) == 1 then
    redis.call('HSET', d, 'job_id', job_id, 'url', url, 'status', 'pending', 'attempts', '[]',
      'next_attempt_at', now, 'created_at', now, 'updated_at', now)
    redis.call('ZADD', deliveries, now, msg)
  end
end
`

// enqueueScript: KEYS job hash, stream, idempotency keys, [idem key]; ARGV
// job id, now (ms), then the hash's field/value pairs. Returns {1, id} when
// stored, {0, existing id} when the idempotency key was taken.
var enqueueScript = redis.NewScript(`
if #KEYS == 4 then
  if not redis.call('SET', KEYS[4], ARGV[1], 'NX') then
    return {0, redis.call('GET', KEYS[4])}
  end
  redis.call('ZADD', KEYS[3], ARGV[2], KEYS[4])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('XADD', KEYS[2], '*', 'id', ARGV[1])
return {1, ARGV[1]}
`)

// completeScript applies a callback with the same rules as decide.
// KEYS job hash, leases, delayed, deliveries, finished; ARGV job id, lease token,
// outcome, result, error, now (ms), retry jitter, key prefix.
// Returns 'applied', 'repeat', 'conflict' or 'not_found'.
var completeScript = redis.NewScript(createDeliveryLua + `
local j, id, now = KEYS[1], ARGV[1], ARGV[6]
if redis.call('EXISTS', j) == 0 then return 'not_found' end
local f = redis.call('HMGET', j, 'status', 'lease_token', 'attempts', 'max_attempts', 'webhook_url')
local status, token, attempts, max_attempts, hook = f[1], f[2], tonumber(f[3]), tonumber(f[4]), f[5]
local kind = ARGV[3]
if not token or token ~= ARGV[2] then return 'conflict' end
if status ~= 'running' then
  if (kind == 'succeeded' and status == 'succeeded') or (kind == 'failed' and status == 'failed') or
     (kind == 'retry' and (status == 'queued' or status == 'failed')) then
    return 'repeat'
  end
  return 'conflict'
end
redis.call('HDEL', j, 'lease_owner', 'lease_expires_at')
redis.call('ZREM', KEYS[2], id)
if kind == 'succeeded' then
  redis.call('HSET', j, 'status', 'succeeded', 'result', ARGV[4], 'updated_at', now)
  redis.call('HDEL', j, 'error')
elseif kind == 'failed' or attempts >= max_attempts then
  redis.call('HSET', j, 'status', 'failed', 'error', ARGV[5], 'updated_at', now)
else
  local delay = math.min(2 ^ attempts * 1000, 300000)
  local at = string.format('%d', tonumber(now) + math.floor(delay * (1 + tonumber(ARGV[7]))))
  redis.call('HSET', j, 'status', 'queued', 'error', ARGV[5], 'available_at', at, 'updated_at', now)
  redis.call('ZADD', KEYS[3], at, id)
  return 'applied'
end
redis.call('ZADD', KEYS[5], now, id)
if hook then create_delivery(ARGV[8], KEYS[4], id, hook, now) end
return 'applied'
`)

// reapScript fails running jobs whose lease expired with attempts
// exhausted, re-adds to the stream those with attempts left, and moves due
// delayed retries to the stream. KEYS leases,
// delayed, stream, deliveries, finished; ARGV now (ms), the exhausted error, key
// prefix. Returns the ids of the jobs it failed.
var reapScript = redis.NewScript(createDeliveryLua + `
local now, prefix = ARGV[1], ARGV[3]
local failed = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)) do
  local j = prefix .. 'job:' .. id
  local f = redis.call('HMGET', j, 'status', 'lease_expires_at', 'attempts', 'max_attempts', 'webhook_url')
  if f[1] ~= 'running' or not f[2] then
    redis.call('ZREM', KEYS[1], id)
  elseif tonumber(f[2]) <= tonumber(now) and tonumber(f[3]) >= tonumber(f[4]) then
    redis.call('HSET', j, 'status', 'failed', 'error', ARGV[2], 'updated_at', now)
    redis.call('HDEL', j, 'lease_owner', 'lease_expires_at')
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[5], now, id)
    if f[5] then create_delivery(prefix, KEYS[4], id, f[5], now) end
    table.insert(failed, id)
  elseif tonumber(f[2]) <= tonumber(now) then
    -- Attempts left: a new entry makes the job claimable even if its old
    -- entry was acknowledged by a worker that found the lease still live.
    redis.call('ZREM', KEYS[1], id)
    redis.call('XADD', KEYS[3], '*', 'id', id)
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('XADD', KEYS[3], '*', 'id', id)
end
return failed
`)

// claimDeliveryScript takes the first due pending delivery that no gateway
// holds: its score becomes the claim's expiry, so it is due again only if
// the claimer dies. KEYS deliveries; ARGV now, lease ms, key prefix.
var claimDeliveryScript = redis.NewScript(`
local now = tonumber(ARGV[1])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 20)) do
  local d = ARGV[3] .. 'delivery:' .. id
  local f = redis.call('HMGET', d, 'status', 'lease_expires_at')
  if f[1] ~= 'pending' then
    redis.call('ZREM', KEYS[1], id)
  elseif not f[2] or tonumber(f[2]) <= now then
    local exp = string.format('%d', now + tonumber(ARGV[2]))
    redis.call('HSET', d, 'lease_expires_at', exp, 'updated_at', ARGV[1])
    redis.call('ZADD', KEYS[1], exp, id)
    return id
  end
end
return false
`)

// recordAttemptScript appends an attempt to a pending delivery and
// reschedules or settles it. KEYS delivery hash, deliveries; ARGV attempt
// JSON, status, next attempt (ms), now, delivery id.
var recordAttemptScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'status', 'attempts')
if f[1] ~= 'pending' then return 0 end
local a = f[2] or '[]'
if a == '[]' then a = '[' .. ARGV[1] .. ']' else a = string.sub(a, 1, -2) .. ',' .. ARGV[1] .. ']' end
redis.call('HSET', KEYS[1], 'attempts', a, 'status', ARGV[2], 'next_attempt_at', ARGV[3], 'updated_at', ARGV[4])
redis.call('HDEL', KEYS[1], 'lease_expires_at')
if ARGV[2] == 'pending' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
else
  redis.call('ZREM', KEYS[2], ARGV[5])
end
return 1
`)
