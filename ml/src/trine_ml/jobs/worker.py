"""The worker loop: claim, run under a renewed lease, report, acknowledge; and a graceful
stop that lets running jobs finish within a grace period, then releases them.

A slot claims its next job as soon as the current one has run: the report to the gateway
(and the acknowledgement) carry on in the background, still under the renewed lease, so the
round trip to the gateway does not idle the slot."""

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
#: slows the worker down instead of piling up finished jobs).
REPORTS_PER_SLOT = 4


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
    ) -> None:
        self._queue = queue
        self._runner = runner
        self._reporter = reporter
        self._lease_s = lease_s
        self._concurrency = concurrency
        self._grace_s = shutdown_grace_s
        self._idle_sleep_s = idle_sleep_s
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
        while not stop.is_set():
            try:
                job = await self._queue.claim()
            except Exception:
                logger.exception("claim failed", extra={"event": "job_claim_error"})
                await _sleep_unless(stop, CLAIM_ERROR_BACKOFF_S)
                continue
            if job is None:
                if self._idle_sleep_s > 0:
                    await _sleep_unless(stop, self._idle_sleep_s)
                continue
            if stop.is_set():
                # Claimed as the stop came: hand it straight back.
                await self._release(job)
                return
            running = _Running(job, lease_deadline=time.monotonic() + self._lease_s)
            supervision = asyncio.create_task(self._handle(running))
            self._jobs.add(supervision)
            supervision.add_done_callback(self._jobs.discard)
            ran = asyncio.create_task(running.ran.wait())
            await asyncio.wait([supervision, ran], return_when=asyncio.FIRST_COMPLETED)
            ran.cancel()
            while len(self._jobs) > self._concurrency * REPORTS_PER_SLOT:
                await asyncio.wait(self._jobs, return_when=asyncio.FIRST_COMPLETED)

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
