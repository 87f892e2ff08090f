"""The scaled backend: Redis Streams (api/jobs.md). The stream carries "this job is
runnable" notices; the job hash is the truth, and every state change is a Lua script that
checks the lease first, so a stale notice or a late worker changes nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from trine_ml.jobs.queue import ClaimedJob, new_lease_token, now_ms

logger = logging.getLogger(__name__)

PREFIX = "trine:jobs:"
STREAM = PREFIX + "stream"
GROUP = "workers"
LEASES = PREFIX + "leases"


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


# KEYS: job hash, leases. ARGV: job id, now, expires, worker, token.
# The SQLite claim's rule: queued and available, or running with an expired lease and
# attempts left. Answers {"ok", type, input, attempts, max_attempts, request_id}, else
# {"held"} (another worker's lease is live) or {"done"} (finished, gone, delayed, attempts
# exhausted).
CLAIM_LUA = """
local f = redis.call('HMGET', KEYS[1], 'status', 'available_at', 'lease_expires_at',
                     'attempts', 'max_attempts', 'type', 'input', 'request_id')
local status = f[1]
if not status then return {'done'} end
local now = tonumber(ARGV[2])
local attempts = tonumber(f[4] or '0')
local max_attempts = tonumber(f[5] or '1')
if status == 'running' then
  if tonumber(f[3] or '0') > now then return {'held'} end
  if attempts >= max_attempts then return {'done'} end
elseif status ~= 'queued' or tonumber(f[2] or '0') > now then
  return {'done'}
end
attempts = attempts + 1
redis.call('HSET', KEYS[1], 'status', 'running', 'attempts', tostring(attempts),
           'lease_owner', ARGV[4], 'lease_token', ARGV[5], 'lease_expires_at', ARGV[3],
           'updated_at', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return {'ok', f[6] or '', f[7] or '', tostring(attempts), tostring(max_attempts), f[8] or ''}
"""

# KEYS: job hash, leases. ARGV: job id, token, now, expires.
RENEW_LUA = """
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_token')
if f[1] ~= 'running' or f[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'lease_expires_at', ARGV[4], 'updated_at', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
"""

# KEYS: job hash, leases, stream. ARGV: job id, token, now.
RELEASE_LUA = """
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_token', 'attempts')
if f[1] ~= 'running' or f[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', tostring(tonumber(f[3]) - 1),
           'available_at', ARGV[3], 'updated_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_token', 'lease_expires_at')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], '*', 'id', ARGV[1])
return 1
"""


class RedisJobQueue:
    """:class:`~trine_ml.jobs.queue.JobQueue` on Redis Streams, consumer group ``workers``,
    consumer name = the worker id."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        worker_id: str,
        lease_ms: int,
        block_ms: int = 1000,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._redis = client
        self._worker_id = worker_id
        self._lease_ms = lease_ms
        self._block_ms = block_ms
        self._clock = clock
        self._claim_script = client.register_script(CLAIM_LUA)
        self._renew_script = client.register_script(RENEW_LUA)
        self._release_script = client.register_script(RELEASE_LUA)
        self._unacked: list[str] = []  # entries to acknowledge in the next round trip
        self._acking: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls, url: str, *, worker_id: str, lease_ms: int, block_ms: int = 1000
    ) -> RedisJobQueue:
        client = aioredis.Redis.from_url(url, decode_responses=True, protocol=2)
        await ensure_group(client)
        return cls(client, worker_id=worker_id, lease_ms=lease_ms, block_ms=block_ms)

    async def claim(self, limit: int = 1) -> list[ClaimedJob]:
        # Entries of workers that died come first; then new ones, blocking a little.
        while True:
            entries = await self._autoclaim(limit) or await self._read(limit)
            if not entries:
                return []
            jobs = await self._claim_entries(entries)
            if jobs:
                return jobs

    async def _autoclaim(self, limit: int) -> list[tuple[str, str]]:
        reply: list[Any] = await self._redis.xautoclaim(
            STREAM, GROUP, self._worker_id, min_idle_time=self._lease_ms, count=limit
        )
        entries = []
        deleted = []  # entries deleted under us: nothing to claim
        for entry_id, fields in reply[1] if len(reply) > 1 else []:
            if fields:
                entries.append((str(entry_id), str(fields.get("id", ""))))
            else:
                deleted.append(str(entry_id))
        await self._drop(deleted)
        return entries

    async def _read(self, limit: int) -> list[tuple[str, str]]:
        reply = cast(
            list[Any] | None,
            await self._redis.xreadgroup(
                GROUP, self._worker_id, {STREAM: ">"}, count=limit, block=self._block_ms
            ),
        )
        return [
            (str(entry_id), str((fields or {}).get("id", "")))
            for _, entries in reply or []
            for entry_id, fields in entries
        ]

    async def _claim_entries(self, entries: list[tuple[str, str]]) -> list[ClaimedJob]:
        """One claim script per entry, all in one round trip; each claim has its own token."""
        now = self._clock()
        tokens = [new_lease_token() for _ in entries]
        async with self._redis.pipeline(transaction=False) as pipe:
            for (_, job_id), token in zip(entries, tokens, strict=True):
                await self._claim_script(
                    keys=[job_key(job_id), LEASES],
                    args=[job_id, now, now + self._lease_ms, self._worker_id, token],
                    client=pipe,
                )
            replies = cast(list[list[str]], await pipe.execute())
        jobs, refused = [], []
        for (entry_id, job_id), token, reply in zip(entries, tokens, replies, strict=True):
            if reply[0] == "ok":
                _, job_type, raw_input, attempts, max_attempts, request_id = reply
                jobs.append(
                    ClaimedJob(
                        job_id,
                        job_type,
                        raw_input,
                        int(attempts),
                        int(max_attempts),
                        request_id,
                        token,
                        entry_id,
                    )
                )
                continue
            # Refused: finished, gone, not yet available, out of attempts, or another
            # worker's lease is live (should that worker die, the gateway's reaper adds a new
            # entry).
            refused.append(entry_id)
            logger.debug(
                "stream entry not claimable",
                extra={"event": "job_entry_skipped", "job_id": job_id, "reason": reply[0]},
            )
        await self._drop(refused)
        return jobs

    async def renew(self, job: ClaimedJob) -> bool:
        now = self._clock()
        renewed = await self._renew_script(
            keys=[job_key(job.id), LEASES],
            args=[job.id, job.lease_token, now, now + self._lease_ms],
        )
        if int(renewed) != 1:
            return False
        if job.entry_id is not None:
            # Resets the entry's idle time, so no other worker XAUTOCLAIMs it meanwhile.
            await self._redis.xclaim(STREAM, GROUP, self._worker_id, 0, [job.entry_id], justid=True)
        return True

    async def release(self, job: ClaimedJob) -> bool:
        released = await self._release_script(
            keys=[job_key(job.id), LEASES, STREAM], args=[job.id, job.lease_token, self._clock()]
        )
        if int(released) != 1:
            return False
        if job.entry_id is not None:
            await self._drop([job.entry_id])
        return True

    async def ack(self, job: ClaimedJob) -> None:
        if job.entry_id is None:
            return
        # The outcomes of a batch report are settled together, and so their jobs are
        # acknowledged together: one round trip for every entry acknowledged in the same turn
        # of the event loop.
        self._unacked.append(job.entry_id)
        if self._acking is None:
            self._acking = asyncio.create_task(self._ack_unacked())
        await asyncio.shield(self._acking)

    async def _ack_unacked(self) -> None:
        entry_ids, self._unacked, self._acking = self._unacked, [], None
        await self._drop(entry_ids)

    async def _drop(self, entry_ids: list[str]) -> None:
        if not entry_ids:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(STREAM, GROUP, *entry_ids)
            pipe.xdel(STREAM, *entry_ids)
            await pipe.execute()

    async def aclose(self) -> None:
        await self._redis.aclose()


async def ensure_group(client: aioredis.Redis) -> None:
    """Creates the consumer group (and the stream); BUSYGROUP means the other side did."""
    try:
        await client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
