"""Assembles a worker from its settings: the queue backend, the ML services, one HTTP
client (sandbox and gateway), the runner, the reporter."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from trine_ml.embedding import Embedder
from trine_ml.jobs.callback import OutcomeReporter
from trine_ml.jobs.queue import JobQueue
from trine_ml.jobs.redis_queue import RedisJobQueue
from trine_ml.jobs.runner import JobRunner
from trine_ml.jobs.settings import WorkerSettings
from trine_ml.jobs.sqlite_queue import SQLiteJobQueue
from trine_ml.jobs.worker import Worker
from trine_ml.services import open_services
from trine_ml.store.base import VectorStore

logger = logging.getLogger("trine_ml.worker")


async def open_queue(settings: WorkerSettings) -> JobQueue:
    if settings.resolved_backend == "redis":
        assert settings.redis_url is not None  # enforced by WorkerSettings
        return await RedisJobQueue.connect(
            settings.redis_url, worker_id=settings.worker_id, lease_ms=settings.lease_ms
        )
    path = settings.jobs_sqlite_path
    return await asyncio.to_thread(
        SQLiteJobQueue, path, worker_id=settings.worker_id, lease_ms=settings.lease_ms
    )


async def run_worker(
    settings: WorkerSettings,
    stop: asyncio.Event,
    *,
    embedder: Embedder | None = None,
    store: VectorStore | None = None,
) -> None:
    """Runs a worker until ``stop`` is set and its running jobs are finished or released.
    ``embedder`` and ``store`` are for tests, as in :func:`trine_ml.app.create_app`."""
    if stop.is_set():
        return  # stopped while starting: nothing claimed, nothing to load
    queue = await open_queue(settings)
    try:
        async with (
            open_services(settings, embedder=embedder, store=store) as services,
            # aiohttp rather than httpx: a job's two HTTP calls are most of a worker's CPU per
            # job, and aiohttp spends about a quarter of httpx's on each.
            aiohttp.ClientSession() as http,
        ):
            token = settings.internal_token.get_secret_value()
            runner = JobRunner(
                services,
                http,
                sandbox_url=settings.sandbox_url,
                internal_token=token,
                service_id=settings.service_id,
                sandbox_timeout_s=settings.sandbox_timeout_s,
            )
            reporter = OutcomeReporter(http, settings.gateway_url, token)
            worker = Worker(
                queue,
                runner,
                reporter,
                lease_s=settings.job_lease,
                concurrency=settings.worker_concurrency,
                shutdown_grace_s=settings.worker_shutdown_grace,
                claim_ahead_s=settings.worker_claim_ahead,
                idle_sleep_s=(
                    settings.worker_poll_ms / 1000 if settings.resolved_backend == "sqlite" else 0
                ),
            )
            logger.info(
                "worker ready",
                extra={
                    "event": "worker_ready",
                    "worker_id": settings.worker_id,
                    "backend": settings.resolved_backend,
                    "concurrency": settings.worker_concurrency,
                    "lease_s": settings.job_lease,
                    "provider": services.provider.name,
                },
            )
            try:
                await worker.run(stop)
            finally:
                await reporter.aclose()
    finally:
        await queue.aclose()
