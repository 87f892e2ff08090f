"""Entry point of the job worker: ``python -m trine_ml.worker`` (settings from the
environment; see ml/README.md). SIGTERM or SIGINT stops it gracefully, with exit status 0."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from pydantic import ValidationError

from trine_ml.jobs.settings import WorkerSettings
from trine_ml.jobs.sqlite_queue import check_sqlite_version
from trine_ml.logs import configure_logging, log_invalid_settings

logger = logging.getLogger("trine_ml.worker")


def main() -> int:
    # A stop asked for while the (slow) imports run is honoured once the loop starts.
    early_stop: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: early_stop.append(received))
    # Everything the worker loads is local; make any hub client refuse the network too.
    os.environ["HF_HUB_OFFLINE"] = "1"
    configure_logging(os.environ.get("TRINE_LOG_LEVEL", "INFO").upper())
    try:
        settings = WorkerSettings()  # type: ignore[call-arg]  # fields come from the environment
        if settings.resolved_backend == "sqlite":
            check_sqlite_version()
    except ValidationError as exc:
        log_invalid_settings(logger, exc)
        return 2
    except RuntimeError as exc:
        logger.error(str(exc), extra={"event": "invalid_settings"})
        return 2
    logging.getLogger().setLevel(settings.log_level)
    try:
        asyncio.run(_serve(settings, early_stop))
    except Exception:
        logger.exception("worker failed", extra={"event": "worker_failed"})
        return 1
    return 0


async def _serve(settings: WorkerSettings, early_stop: list[int]) -> None:
    if early_stop:
        return
    from trine_ml.jobs.service import run_worker  # the ML stack: imported after the handlers

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if early_stop:
        stop.set()
    await run_worker(settings, stop)


if __name__ == "__main__":
    sys.exit(main())
