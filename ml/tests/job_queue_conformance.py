"""Checks every job queue backend must pass (api/jobs.md's state machine, worker side).
Each backend's test module subclasses :class:`JobQueueConformance` and supplies a
``harness`` fixture: an async factory of a :class:`QueueHarness` on an empty queue, which
plays the gateway (enqueues and reads jobs as the contract says) and builds queues."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from trine_ml.jobs.queue import ClaimedJob, JobQueue, now_ms


class QueueHarness(Protocol):
    async def make_queue(self, worker_id: str, lease_ms: int) -> JobQueue:
        """A queue as one worker sees it (closed by the harness)."""
        ...

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
        """Inserts a queued job the way the gateway does."""
        ...

    async def record(self, job_id: str) -> dict[str, Any]:
        """The job's stored fields (absent ones as None), integers as int."""
        ...

    async def update(self, job_id: str, **fields: Any) -> None:
        """Changes stored fields behind the workers' backs (a gateway or another worker)."""
        ...

    async def aclose(self) -> None: ...


HarnessFactory = Callable[[], Awaitable[QueueHarness]]

#: A lease short enough to let it expire in a test.
SHORT_LEASE_MS = 200
LONG_LEASE_MS = 60_000


def run(harness: HarnessFactory, scenario: Callable[[QueueHarness], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        h = await harness()
        try:
            return await scenario(h)
        finally:
            await h.aclose()

    return asyncio.run(main())


async def claim_one(queue: JobQueue) -> ClaimedJob | None:
    """A claim of one job, as a worker that does not know its pace yet makes."""
    jobs = await queue.claim()
    assert len(jobs) <= 1
    return jobs[0] if jobs else None


async def expire() -> None:
    """Outlives a SHORT_LEASE_MS lease (and, for Redis, the entry's idle time)."""
    await asyncio.sleep(SHORT_LEASE_MS / 1000 * 1.75)


class JobQueueConformance:
    def test_empty_queue_claims_nothing(self, harness: HarnessFactory) -> None:
        async def scenario(h: QueueHarness) -> None:
            queue = await h.make_queue("w1", LONG_LEASE_MS)
            assert await claim_one(queue) is None

        run(harness, scenario)

    def test_claim_takes_a_lease_and_returns_the_job(self, harness: HarnessFactory) -> None:
        async def scenario(h: QueueHarness) -> None:
            body = json.dumps({"language": "python", "code": "print(1)"})
            await h.enqueue("job_a", input_json=body, request_id="req-a", max_attempts=3)
            queue = await h.make_queue("w1", LONG_LEASE_MS)
            before = now_ms()
            job = await claim_one(queue)
            assert job is not None
            assert (job.id, job.type, job.input, job.request_id) == (
                "job_a",
                "sandbox.run",
                body,
                "req-a",
            )
            assert (job.attempts, job.max_attempts) == (1, 3)
            assert len(job.lease_token) >= 22
            stored = await h.record("job_a")
            assert stored["status"] == "running"
            assert stored["attempts"] == 1
            assert stored["lease_owner"] == "w1"
            assert stored["lease_token"] == job.lease_token
            assert before + LONG_LEASE_MS <= stored["lease_expires_at"] <= now_ms() + LONG_LEASE_MS
            assert await claim_one(queue) is None  # the only job is leased

        run(harness, scenario)

    def test_claims_follow_availability_order(self, harness: HarnessFactory) -> None:
        async def scenario(h: QueueHarness) -> None:
            now = now_ms()
            for i, job_id in enumerate(["job_1", "job_2", "job_3"]):
                await h.enqueue(job_id, available_at=now - 3000 + i * 1000)
            queue = await h.make_queue("w1", LONG_LEASE_MS)
            claimed = [await claim_one(queue) for _ in range(4)]
            assert [job.id if job else None for job in claimed] == [
                "job_1",
                "job_2",
                "job_3",
                None,
            ]

        run(harness, scenario)

    def test_a_job_not_yet_available_is_not_claimed(self, harness: HarnessFactory) -> None:
        async def scenario(h: QueueHarness) -> None:
            await h.enqueue("job_later", available_at=now_ms() + 60_000)
            queue = await h.make_queue("w1", LONG_LEASE_MS)
            assert await claim_one(queue) is None
            assert (await h.record("job_later"))["status"] == "queued"

        run(harness, scenario)

    def test_renew_extends_the_lease(self, harness: HarnessFactory) -> None:
        async def scenario(h: QueueHarness) -> None:
            await h.enqueue("job_a")
            queue = await h.make_queue("w1", LONG_LEASE_MS)
            job = await claim_one(queue)
            assert job is not None
            first = (await h.record("job_a"))["lease_expires_at"]
            await asyncio.sleep(0.02)
            assert await queue.renew(job)
            stored = await h.record("job_a")
            assert stored["lease_expires_at"] > first
            assert (stored["status"], stored["lease_token"]) == ("running", job.lease_token)

        run(harness, scenario)

    def test_renew_reports_a_lost_lease(self, harness: HarnessFactory) -> None:
        async def scenario(h: QueueHarness) -> None:
            await h.enqueue("job_a")
            await h.enqueue("job_b")
            queue = await h.make_queue("w1", LONG_LEASE_MS)
            a, b = await claim_one(queue), await claim_one(queue)
            assert a is not None
            assert b is not None
            await h.update("job_a", lease_token="someone-else")
            await h.update("job_b", status="succeeded")
            assert not await queue.renew(a)
            assert not await queue.renew(b)
            assert (await h.record("job_a"))["lease_token"] == "someone-else"

        run(harness, scenario)

    def test_release_requeues_without_counting_the_attempt(self, harness: HarnessFactory) -> None:
        async def scenario(h: QueueHarness) -> None:
            await h.enqueue("job_a")
            queue = await h.make_queue("w1", LONG_LEASE_MS)
            job = await claim_one(queue)
            assert job is not None
            assert await queue.release(job)
            stored = await h.record("job_a")
            assert (stored["status"], stored["attempts"]) == ("queued", 0)
            assert stored["lease_token"] is None
            assert stored["lease_expires_at"] is None
            assert stored["available_at"] <= now_ms()
            assert not await queue.release(job)  # not ours any more
            again = await claim_one(queue)
            assert again is not None
            assert (again.id, again.attempts) == ("job_a", 1)
            assert again.lease_token != job.lease_token

        run(harness, scenario)

    def test_an_expired_lease_is_claimed_again_counting_an_attempt(
        self, harness: HarnessFactory
    ) -> None:
        async def scenario(h: QueueHarness) -> None:
            await h.enqueue("job_a", max_attempts=3)
            dead = await h.make_queue("w-dead", SHORT_LEASE_MS)
            first = await claim_one(dead)
            assert first is not None
            live = await h.make_queue("w-live", SHORT_LEASE_MS)
            assert await claim_one(live) is None  # the lease is still live
            await expire()
            second = await claim_one(live)
            assert second is not None
            assert (second.id, second.attempts) == ("job_a", 2)
            assert second.lease_token != first.lease_token
            assert not await dead.renew(first)
            assert not await dead.release(first)
            stored = await h.record("job_a")
            assert (stored["lease_owner"], stored["attempts"]) == ("w-live", 2)

        run(harness, scenario)

    def test_no_claim_once_attempts_are_exhausted(self, harness: HarnessFactory) -> None:
        async def scenario(h: QueueHarness) -> None:
            await h.enqueue("job_a", max_attempts=1)
            dead = await h.make_queue("w-dead", SHORT_LEASE_MS)
            assert await claim_one(dead) is not None
            await expire()
            other = await h.make_queue("w-other", SHORT_LEASE_MS)
            assert await claim_one(other) is None  # the gateway's reaper fails it
            stored = await h.record("job_a")
            assert (stored["status"], stored["attempts"]) == ("running", 1)

        run(harness, scenario)

    def test_concurrent_claimers_get_distinct_jobs(self, harness: HarnessFactory) -> None:
        async def scenario(h: QueueHarness) -> None:
            ids = [f"job_{i:02d}" for i in range(24)]
            for job_id in ids:
                await h.enqueue(job_id)
            queues = [await h.make_queue(f"w{i}", LONG_LEASE_MS) for i in range(4)]

            async def drain(queue: JobQueue) -> list[str]:
                taken = []
                while (job := await claim_one(queue)) is not None:
                    taken.append(job.id)
                return taken

            taken = await asyncio.gather(*(drain(q) for q in queues))
            every = [job_id for part in taken for job_id in part]
            assert sorted(every) == ids  # each job once, none left
            for job_id in ids:
                assert (await h.record(job_id))["attempts"] == 1

        run(harness, scenario)

    def test_a_batch_claim_takes_a_lease_per_job(self, harness: HarnessFactory) -> None:
        async def scenario(h: QueueHarness) -> None:
            now = now_ms()
            ids = [f"job_{i}" for i in range(5)]
            for i, job_id in enumerate(ids):
                await h.enqueue(job_id, available_at=now - 5000 + i * 1000)
            queue = await h.make_queue("w1", LONG_LEASE_MS)
            batch = await queue.claim(3)
            assert [job.id for job in batch] == ids[:3]  # availability order, up to the limit
            assert len({job.lease_token for job in batch}) == 3
            for job in batch:
                stored = await h.record(job.id)
                assert (stored["status"], stored["lease_token"]) == ("running", job.lease_token)
            # Each lease lives on its own: one released, one lost, one renewed.
            assert await queue.release(batch[0])
            await h.update(batch[1].id, lease_token="someone-else")
            assert not await queue.renew(batch[1])
            assert await queue.renew(batch[2])
            assert (await h.record(batch[0].id))["status"] == "queued"
            rest = await queue.claim(10)
            assert sorted(job.id for job in rest) == [ids[0], *ids[3:]]
            assert await queue.claim(10) == []

        run(harness, scenario)

    def test_concurrent_batch_claimers_get_distinct_jobs(self, harness: HarnessFactory) -> None:
        async def scenario(h: QueueHarness) -> None:
            ids = [f"job_{i:02d}" for i in range(40)]
            for job_id in ids:
                await h.enqueue(job_id)
            queues = [await h.make_queue(f"w{i}", LONG_LEASE_MS) for i in range(4)]

            async def drain(queue: JobQueue) -> list[str]:
                taken = []
                while jobs := await queue.claim(3):
                    taken.extend(job.id for job in jobs)
                return taken

            taken = await asyncio.gather(*(drain(q) for q in queues))
            every = [job_id for part in taken for job_id in part]
            assert sorted(every) == ids

        run(harness, scenario)
