"""Test helpers that play the gateway's side of api/jobs.md: enqueue jobs and read or
change their records, on SQLite (the INSERT) or Redis (HSET + XADD)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from trine_ml.jobs.queue import JobQueue, now_ms
from trine_ml.jobs.redis_queue import STREAM, RedisJobQueue, ensure_group, job_key
from trine_ml.jobs.sqlite_queue import SQLiteJobQueue, connect

INT_FIELDS = ("attempts", "max_attempts", "available_at", "lease_expires_at")
FIELDS = (
    "status",
    "type",
    "input",
    "attempts",
    "max_attempts",
    "available_at",
    "lease_owner",
    "lease_token",
    "lease_expires_at",
    "result",
    "error",
    "request_id",
)


def job_fields(
    job_id: str,
    job_type: str,
    input_json: str,
    available_at: int | None,
    max_attempts: int,
    request_id: str,
) -> dict[str, Any]:
    now = now_ms()
    return {
        "id": job_id,
        "owner": "key-test",
        "type": job_type,
        "input": input_json,
        "request_hash": hashlib.sha256(f"{job_type}\n\n{input_json}".encode()).hexdigest(),
        "status": "queued",
        "attempts": 0,
        "max_attempts": max_attempts,
        "available_at": now if available_at is None else available_at,
        "request_id": request_id,
        "created_at": now,
        "updated_at": now,
    }


class SQLiteHarness:
    """The gateway's side on the shared file, through its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect(path)
        self._queues: list[JobQueue] = []

    async def make_queue(self, worker_id: str, lease_ms: int) -> JobQueue:
        queue = SQLiteJobQueue(self.path, worker_id=worker_id, lease_ms=lease_ms)
        self._queues.append(queue)
        return queue

    def enqueue_now(
        self,
        job_id: str,
        *,
        job_type: str = "sandbox.run",
        input_json: str = "{}",
        available_at: int | None = None,
        max_attempts: int = 5,
        request_id: str = "",
    ) -> None:
        fields = job_fields(job_id, job_type, input_json, available_at, max_attempts, request_id)
        columns = ", ".join(fields)
        marks = ", ".join(f":{name}" for name in fields)
        self._conn.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", fields)  # noqa: S608

    async def enqueue(self, job_id: str, **kwargs: Any) -> None:
        self.enqueue_now(job_id, **kwargs)

    def record_now(self, job_id: str) -> dict[str, Any]:
        row = self._conn.execute(
            f"SELECT {', '.join(FIELDS)} FROM jobs WHERE id = ?",  # noqa: S608
            (job_id,),
        ).fetchone()
        assert row is not None, job_id
        return dict(zip(FIELDS, row, strict=True))

    async def record(self, job_id: str) -> dict[str, Any]:
        return self.record_now(job_id)

    def update_now(self, job_id: str, **fields: Any) -> None:
        assignments = ", ".join(f"{name} = :{name}" for name in fields)
        self._conn.execute(
            f"UPDATE jobs SET {assignments} WHERE id = :id",  # noqa: S608
            {**fields, "id": job_id},
        )

    async def update(self, job_id: str, **fields: Any) -> None:
        self.update_now(job_id, **fields)

    async def aclose(self) -> None:
        for queue in self._queues:
            await queue.aclose()
        self._conn.close()


class RedisHarness:
    """The gateway's side on Redis: the job hash and the stream entry, per api/jobs.md."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = aioredis.Redis.from_url(url, decode_responses=True, protocol=2)
        self._queues: list[RedisJobQueue] = []

    async def reset(self) -> None:
        await self.client.flushdb()
        await ensure_group(self.client)

    async def make_queue(self, worker_id: str, lease_ms: int) -> JobQueue:
        queue = RedisJobQueue(
            aioredis.Redis.from_url(self.url, decode_responses=True, protocol=2),
            worker_id=worker_id,
            lease_ms=lease_ms,
            block_ms=50,
        )
        self._queues.append(queue)
        return queue

    async def enqueue(
        self,
        job_id: str,
        *,
        job_type: str = "sandbox.run",
        input_json: str = "{}",
        available_at: int | None = None,
        max_attempts: int = 5,
        request_id: str = "",
    ) -> None:
        fields = job_fields(job_id, job_type, input_json, available_at, max_attempts, request_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(job_key(job_id), mapping={k: str(v) for k, v in fields.items()})
            pipe.xadd(STREAM, {"id": job_id})
            await pipe.execute()

    async def record(self, job_id: str) -> dict[str, Any]:
        stored: dict[str, str] = await self.client.hgetall(job_key(job_id))
        assert stored, job_id
        return {
            name: (int(stored[name]) if name in INT_FIELDS else stored[name])
            if name in stored
            else None
            for name in FIELDS
        }

    async def update(self, job_id: str, **fields: Any) -> None:
        await self.client.hset(job_key(job_id), mapping={k: str(v) for k, v in fields.items()})

    async def aclose(self) -> None:
        for queue in self._queues:
            await queue.aclose()
        await self.client.aclose()
