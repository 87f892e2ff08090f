"""The Redis Streams job queue: the shared conformance checks, plus what is particular to
the stream (entries acknowledged only when done, XAUTOCLAIM of a dead worker's entry)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from job_queue_conformance import (
    LONG_LEASE_MS,
    SHORT_LEASE_MS,
    HarnessFactory,
    JobQueueConformance,
    QueueHarness,
    claim_one,
    expire,
)
from queue_harness import RedisHarness
from trine_ml.jobs.redis_queue import GROUP, LEASES, STREAM


@pytest.fixture
def harness(redis_url: str) -> HarnessFactory:
    async def build() -> QueueHarness:
        harness = RedisHarness(redis_url)
        await harness.reset()
        return harness

    return build


class TestRedisJobQueueConformance(JobQueueConformance):
    pass


def run(redis_url: str, scenario: Any) -> None:
    async def main() -> None:
        h = RedisHarness(redis_url)
        await h.reset()
        try:
            await scenario(h)
        finally:
            await h.aclose()

    asyncio.run(main())


async def pending(h: RedisHarness) -> list[tuple[str, str]]:
    """(entry id, consumer) of every entry delivered but not acknowledged."""
    rows = await h.client.xpending_range(STREAM, GROUP, min="-", max="+", count=100)
    return [(row["message_id"], row["consumer"]) for row in rows]


def test_entry_is_acknowledged_only_by_ack(redis_url: str) -> None:
    async def scenario(h: RedisHarness) -> None:
        await h.enqueue("job_a")
        queue = await h.make_queue("w1", LONG_LEASE_MS)
        job = await claim_one(queue)
        assert job is not None
        assert job.entry_id is not None
        assert await pending(h) == [(job.entry_id, "w1")]
        assert (
            await h.client.zscore(LEASES, "job_a") == (await h.record("job_a"))["lease_expires_at"]
        )
        assert await queue.renew(job)  # XCLAIMs the entry to itself again
        assert await pending(h) == [(job.entry_id, "w1")]
        await queue.ack(job)
        assert await pending(h) == []
        assert await h.client.xlen(STREAM) == 0

    run(redis_url, scenario)


def test_a_batch_claim_reads_several_entries_and_acks_them_together(redis_url: str) -> None:
    async def scenario(h: RedisHarness) -> None:
        for job_id in ("job_a", "job_b", "job_c"):
            await h.enqueue(job_id)
        queue = await h.make_queue("w1", LONG_LEASE_MS)
        jobs = await queue.claim(5)
        assert [job.id for job in jobs] == ["job_a", "job_b", "job_c"]
        assert sorted(await pending(h)) == sorted((job.entry_id, "w1") for job in jobs)
        await asyncio.gather(*(queue.ack(job) for job in jobs[:2]))
        assert await pending(h) == [(jobs[2].entry_id, "w1")]
        await queue.ack(jobs[2])
        assert await pending(h) == []
        assert await h.client.xlen(STREAM) == 0

    run(redis_url, scenario)


def test_dead_workers_entry_is_autoclaimed(redis_url: str) -> None:
    async def scenario(h: RedisHarness) -> None:
        await h.enqueue("job_a")
        dead = await h.make_queue("w-dead", SHORT_LEASE_MS)
        first = await claim_one(dead)
        assert first is not None
        await expire()
        live = await h.make_queue("w-live", SHORT_LEASE_MS)
        second = await claim_one(live)
        assert second is not None
        assert (second.id, second.attempts, second.entry_id) == ("job_a", 2, first.entry_id)
        assert await pending(h) == [(first.entry_id, "w-live")]
        assert await h.client.xlen(STREAM) == 1  # no new entry: the same one moved

    run(redis_url, scenario)


def test_release_adds_a_new_entry_and_drops_the_old(redis_url: str) -> None:
    async def scenario(h: RedisHarness) -> None:
        await h.enqueue("job_a")
        queue = await h.make_queue("w1", LONG_LEASE_MS)
        job = await claim_one(queue)
        assert job is not None
        assert await queue.release(job)
        assert await pending(h) == []
        assert await h.client.zscore(LEASES, "job_a") is None
        entries = await h.client.xrange(STREAM)
        assert [(entry_id != job.entry_id, fields) for entry_id, fields in entries] == [
            (True, {"id": "job_a"})
        ]

    run(redis_url, scenario)


def test_entries_the_claim_refuses_are_dropped(redis_url: str) -> None:
    async def scenario(h: RedisHarness) -> None:
        await h.enqueue("job_done")
        await h.update("job_done", status="succeeded")
        await h.client.xadd(STREAM, {"id": "job_missing"})
        await h.enqueue("job_held")
        await h.update(
            "job_held", status="running", lease_token="other", lease_expires_at=10**13, attempts=1
        )
        queue = await h.make_queue("w1", LONG_LEASE_MS)
        assert await claim_one(queue) is None
        # Finished, unknown, or leased by a live worker (whose death the reaper handles).
        assert await h.client.xlen(STREAM) == 0
        assert await pending(h) == []
        assert (await h.record("job_held"))["lease_token"] == "other"

    run(redis_url, scenario)
