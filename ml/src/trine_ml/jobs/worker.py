"""The worker loop: claim, run under a renewed lease, report, acknowledge; and a graceful
stop that lets running jobs finish within a grace period, then releases them (and the jobs
claimed but not started).

A slot starts its next job as soon as the current one has run: the report to the gateway
(and the acknowledgement) carry on in the background, still under the renewed lease, so the
round trip to the gateway does not idle the slot. When its jobs are short, a slot also claims
several at once and runs them one after the other, so the round trip to the queue is paid
once for many jobs; it claims ahead only what it expects to start within ``claim_ahead_s``
at the pace of its recent jobs, so long jobs are still claimed one at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from trine_ml.jobs.callback import OutcomeReporter
from trine_ml.jobs.queue import ClaimedJob, JobQueue
from trine_ml.jobs.runner import JobRunner
from trine_ml.logs import job_id_var, request_id_var

logger = logging.getLogger("trine_ml.worker")

#: Wait after a failed claim (the queue's store unreachable) before the next one.
CLAIM_ERROR_BACKOFF_S = 1.0
#: Reports in flight per slot before the slot waits for one to finish (a slow gateway
#: slows the worker down instead of piling up finished jobs). Reports waiting together go
#: to the gateway in one request, so a few dozen keep those requests few.
REPORTS_PER_SLOT = 32
#: The most jobs a slot claims at once.
MAX_CLAIM = 16
#: Weight of the latest run in a slot's running average of run times.
PACE_WEIGHT = 0.2


@dataclass
class _Running:
    """A job this worker is working on. ``lease_deadline`` (``time.monotonic``) moves on
    with each renewal; ``lost`` and ``forced`` say why ``work`` was cancelled, if it was."""

    job: ClaimedJob
    lease_deadline: float
    ran: asyncio.Event = field(default_factory=asyncio.Event)
    work: asyncio.Task[bool] | None = None
    lost: bool = False
    forced: bool = False
    started: float = field(default_factory=time.perf_counter)


class Worker:
    """Runs up to ``concurrency`` jobs at a time from ``queue``."""

    def __init__(
        self,
        queue: JobQueue,
        runner: JobRunner,
        reporter: OutcomeReporter,
        *,
        lease_s: float,
        concurrency: int = 1,
        shutdown_grace_s: float = 20.0,
        idle_sleep_s: float = 0.05,
        claim_ahead_s: float = 0.05,
    ) -> None:
        self._queue = queue
        self._runner = runner
        self._reporter = reporter
        self._lease_s = lease_s
        self._concurrency = concurrency
        self._grace_s = shutdown_grace_s
        self._idle_sleep_s = idle_sleep_s
        # Never more than a tenth of the lease: a claimed job waits at most that long.
        self._claim_ahead_s = min(claim_ahead_s, lease_s / 10)
        self._running: dict[str, _Running] = {}
        # Every claimed job's supervision, from claim to acknowledgement.
        self._jobs: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Works until ``stop`` is set, then stops claiming, gives running jobs the grace
        period, cancels and releases what is left, and returns."""
        slots = [asyncio.create_task(self._slot(stop)) for _ in range(self._concurrency)]
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([stopping, *slots], return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            stop.set()  # a slot crashed: stop the others the same orderly way
        logger.info(
            "stopping: no new claims",
            extra={"event": "worker_stopping", "running": len(self._running)},
        )
        grace_ends = time.monotonic() + self._grace_s
        _, pending = await asyncio.wait(slots, timeout=self._grace_s)
        if self._jobs:
            remaining = max(0.0, grace_ends - time.monotonic())
            _, unfinished = await asyncio.wait(self._jobs, timeout=remaining)
            pending |= unfinished
        if pending:
            for running in list(self._running.values()):
                if running.work is not None and not running.work.done():
                    running.forced = True
                    running.work.cancel()
            await asyncio.wait(pending)
        stopping.cancel()
        for slot in slots:
            if not slot.cancelled() and slot.exception() is not None:
                raise slot.exception()  # type: ignore[misc]
        logger.info("worker stopped", extra={"event": "worker_stopped"})

    async def _slot(self, stop: asyncio.Event) -> None:
        claimed: list[ClaimedJob] = []  # claimed at ``claimed_at``, not started yet
        claimed_at = 0.0
        pace: float | None = None  # running average of this slot's run times, seconds
        try:
            while not stop.is_set():
                if not claimed:
                    # The leases start at the latest when the claim is asked for.
                    claimed_at = time.monotonic()
                    try:
                        claimed = await self._queue.claim(self._claim_size(pace))
                    except Exception:
                        logger.exception("claim failed", extra={"event": "job_claim_error"})
                        await _sleep_unless(stop, CLAIM_ERROR_BACKOFF_S)
                        continue
                    if not claimed:
                        if self._idle_sleep_s > 0:
                            await _sleep_unless(stop, self._idle_sleep_s)
                        continue
                    if stop.is_set():
                        break  # claimed as the stop came: handed back below
                job = claimed.pop(0)
                lease_deadline = await self._lease_before_start(job, claimed_at)
                if lease_deadline is None:
                    continue
                running = _Running(job, lease_deadline=lease_deadline)
                supervision = asyncio.create_task(self._handle(running))
                self._jobs.add(supervision)
                supervision.add_done_callback(self._jobs.discard)
                ran = asyncio.create_task(running.ran.wait())
                await asyncio.wait([supervision, ran], return_when=asyncio.FIRST_COMPLETED)
                ran.cancel()
                took = time.perf_counter() - running.started
                pace = took if pace is None else pace + PACE_WEIGHT * (took - pace)
                while len(self._jobs) > self._concurrency * REPORTS_PER_SLOT:
                    await asyncio.wait(self._jobs, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for job in claimed:
                await self._release(job)

    def _claim_size(self, pace: float | None) -> int:
        """How many jobs a slot claims at once: one until it knows its pace, then one more
        for each job it expects to start within the claim-ahead time, at most MAX_CLAIM."""
        if pace is None:
            return 1
        return max(1, min(MAX_CLAIM, 1 + int(self._claim_ahead_s / max(pace, 1e-6))))

    async def _lease_before_start(self, job: ClaimedJob, claimed_at: float) -> float | None:
        """The lease deadline (``time.monotonic``) a claimed job starts with, renewing the
        lease first if the job waited more than a third of it; None if the lease was lost
        meanwhile (or could not be renewed): the job is not started."""
        if time.monotonic() - claimed_at <= self._lease_s / 3:
            return claimed_at + self._lease_s
        asked_at = time.monotonic()
        try:
            renewed = await self._queue.renew(job)
        except Exception:
            logger.warning(
                "lease renewal failed", extra={"event": "job_renew_error"}, exc_info=True
            )
            renewed = False
        if renewed:
            return asked_at + self._lease_s
        logger.warning(
            "lease lost before the job started: not run",
            extra={"event": "job_lease_lost", "job_id": job.id, "request_id": job.request_id},
        )
        return None

    async def _handle(self, running: _Running) -> None:
        job = running.job
        request_token = request_id_var.set(job.request_id)
        job_token = job_id_var.set(job.id)
        try:
            await self._supervise(running)
        finally:
            job_id_var.reset(job_token)
            request_id_var.reset(request_token)

    async def _supervise(self, running: _Running) -> None:
        job = running.job
        logger.info(
            "job claimed",
            extra={
                "event": "job_claimed",
                "type": job.type,
                "attempt": job.attempts,
                "max_attempts": job.max_attempts,
            },
        )
        work = running.work = asyncio.create_task(self._run_and_report(running))
        renewer = asyncio.create_task(self._keep_lease(running))
        self._running[job.id] = running
        try:
            await asyncio.wait([work])
        finally:
            if not work.done():
                work.cancel()
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            del self._running[job.id]
        if running.lost:
            logger.warning(
                "lease lost: the job was stopped and its result dropped",
                extra={"event": "job_lease_lost"},
            )
            return
        if work.cancelled():
            await self._release(job)
            return
        error = work.exception()
        if error is not None:
            logger.error(
                "job supervision failed",
                extra={"event": "job_error"},
                exc_info=(type(error), error, error.__traceback__),
            )
            await self._release(job)
            return
        if work.result():
            try:
                await self._queue.ack(job)
            except Exception:
                logger.exception("ack failed", extra={"event": "job_ack_error"})

    async def _run_and_report(self, running: _Running) -> bool:
        job = running.job
        outcome = await self._runner.run(job)
        running.ran.set()
        log = logger.info if outcome.kind == "succeeded" else logger.warning
        log(
            "job ran",
            extra={
                "event": "job_outcome",
                "type": job.type,
                "outcome": outcome.kind,
                "error_type": (outcome.error or {}).get("type"),
                "attempt": job.attempts,
                "ms": round((time.perf_counter() - running.started) * 1000, 2),
            },
        )
        return await self._reporter.report(job, outcome, lambda: running.lease_deadline)

    async def _keep_lease(self, running: _Running) -> None:
        """Renews every lease/3; on a lost lease (or none renewed in time) cancels the work."""
        interval = self._lease_s / 3
        while True:
            await asyncio.sleep(interval)
            asked_at = time.monotonic()
            try:
                renewed: bool | None = await self._queue.renew(running.job)
            except Exception:
                logger.warning(
                    "lease renewal failed", extra={"event": "job_renew_error"}, exc_info=True
                )
                renewed = None
            if renewed:
                running.lease_deadline = asked_at + self._lease_s
                continue
            if renewed is False or time.monotonic() >= running.lease_deadline:
                running.lost = True
                if running.work is not None:
                    running.work.cancel()
                return

    async def _release(self, job: ClaimedJob) -> None:
        try:
            released = await self._queue.release(job)
        except Exception:
            logger.exception("release failed", extra={"event": "job_release_error"})
            return
        logger.info(
            "job released" if released else "job not released: the lease was no longer ours",
            extra={
                "event": "job_released",
                "released": released,
                "job_id": job.id,
                "request_id": job.request_id,
            },
        )


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
