"""The signed outcome callback to the gateway (api/jobs.md, "Internal callback"): Standard
Webhooks signing with the internal token as the key."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from trine_ml.jobs.queue import ClaimedJob

logger = logging.getLogger(__name__)

OutcomeKind = Literal["succeeded", "failed", "retry"]

#: First wait between callback attempts; doubles up to the maximum.
INITIAL_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
#: Outcomes per request at most (the gateway takes up to 100).
MAX_BATCH = 64
#: How long an outcome waits for others to share its request. Each request costs the
#: worker and the gateway about as much CPU as a trivial job itself; a few milliseconds of
#: delay on an asynchronous job's completion buy requests carrying several outcomes.
LINGER_S = 0.02


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended: ``result`` (the synchronous route's 200 body) for ``succeeded``,
    ``error`` ({type, message}) for ``failed`` (permanent) and ``retry`` (transient)."""

    kind: OutcomeKind
    result: Any = None
    error: dict[str, str] | None = None

    @classmethod
    def succeeded(cls, result: Any) -> Outcome:
        return cls("succeeded", result=result)

    @classmethod
    def failed(cls, error_type: str, message: str) -> Outcome:
        return cls("failed", error={"type": error_type, "message": message})

    @classmethod
    def retry(cls, error_type: str, message: str) -> Outcome:
        return cls("retry", error={"type": error_type, "message": message})


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed by ``secret``'s UTF-8."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def outcome_entry(job: ClaimedJob, outcome: Outcome) -> dict[str, Any]:
    """One entry of the batch callback's ``outcomes`` list."""
    entry: dict[str, Any] = {"id": job.id, "lease_token": job.lease_token, "outcome": outcome.kind}
    if outcome.kind == "succeeded":
        entry["result"] = outcome.result
    else:
        entry["error"] = outcome.error
    return entry


@dataclass(eq=False, slots=True)
class _Report:
    """An outcome waiting to be settled by the gateway; ``settled`` gets True once it is,
    False once the lease would expire first."""

    job: ClaimedJob
    entry: dict[str, Any]
    lease_deadline: Callable[[], float]
    settled: asyncio.Future[bool]
    attempts: int = 0


class OutcomeReporter:
    """Posts outcomes to ``{gateway}/internal/jobs/outcomes``, several per request: one
    request is in flight at a time, and an outcome waits up to ``linger_s`` for others to
    join it (as do those arriving while a request is in flight), so a busy worker pays one
    signed request for many jobs. An outcome is retried until the gateway answers it 200,
    409 or 404, or until its lease would expire."""

    def __init__(
        self,
        client: aiohttp.ClientSession,
        gateway_url: str,
        secret: str,
        *,
        attempt_timeout_s: float = 10.0,
        max_batch: int = MAX_BATCH,
        linger_s: float = LINGER_S,
    ) -> None:
        self._client = client
        self._url = gateway_url.rstrip("/") + "/internal/jobs/outcomes"
        self._secret = secret
        self._attempt_timeout_s = attempt_timeout_s
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._pending: list[_Report] = []
        self._ready = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    async def report(
        self, job: ClaimedJob, outcome: Outcome, lease_deadline: Callable[[], float]
    ) -> bool:
        """True once the gateway settled the outcome (applied, already applied, or refused
        for good); False if ``lease_deadline()`` (a ``time.monotonic`` value, moved on by
        renewals) passed first, leaving the job to be claimed again."""
        settled: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(_Report(job, outcome_entry(job, outcome), lease_deadline, settled))
        self._ready.set()
        if self._sender is None or self._sender.done():
            # A context of its own: the sender works for every job, not for the one whose
            # request ID and job ID the caller's logging context holds.
            self._sender = asyncio.create_task(self._send_forever(), context=contextvars.Context())
        return await settled

    async def aclose(self) -> None:
        """Stops sending; outcomes still waiting count as not settled."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        for report in self._pending:
            _settle(report, False)
        self._pending.clear()

    async def _send_forever(self) -> None:
        backoff = INITIAL_BACKOFF_S
        while True:
            await self._ready.wait()
            if len(self._pending) < self._max_batch:
                await asyncio.sleep(self._linger_s)
            # A report whose job was cancelled meanwhile (its lease lost) is not sent.
            self._pending = [r for r in self._pending if not r.settled.done()]
            batch = self._pending[: self._max_batch]
            del self._pending[: len(batch)]
            if not self._pending:
                self._ready.clear()
            if not batch:
                continue
            try:
                problem, unsettled = await self._post(batch)
            except Exception:
                # A fault here must not strand the outcomes waiting on this task.
                logger.exception("outcome callback crashed", extra={"event": "job_callback_error"})
                problem, unsettled = "internal error", batch
            if not unsettled:
                backoff = INITIAL_BACKOFF_S
                continue
            wait = backoff * (0.8 + 0.4 * secrets.randbelow(1001) / 1000)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            retried = [r for r in unsettled if self._keep_trying(r, problem, wait)]
            if retried:
                # Retried outcomes go first; new ones join them in the next request.
                self._pending[:0] = retried
                self._ready.set()
                await asyncio.sleep(wait)

    def _keep_trying(self, report: _Report, problem: str, wait: float) -> bool:
        report.attempts += 1
        job = report.job
        extra = {"job_id": job.id, "request_id": job.request_id, "attempt": report.attempts}
        logger.warning(
            "outcome callback failed; retrying",
            extra={"event": "job_callback_retry", "problem": problem, **extra},
        )
        if report.lease_deadline() - time.monotonic() > wait:
            return True
        logger.warning(
            "outcome callback given up: the lease would expire",
            extra={"event": "job_callback_abandoned", **extra},
        )
        _settle(report, False)
        return False

    async def _post(self, batch: list[_Report]) -> tuple[str, list[_Report]]:
        """Sends ``batch`` and settles what the gateway settled; returns what went wrong and
        the reports still to retry."""
        body = json.dumps(
            {"outcomes": [r.entry for r in batch]}, separators=(",", ":"), ensure_ascii=False
        ).encode()
        message_id = "cb_" + secrets.token_hex(16)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret, message_id, timestamp, body),
        }
        now = time.monotonic()
        lease_left = min(r.lease_deadline() for r in batch) - now
        timeout = max(0.1, min(self._attempt_timeout_s, lease_left))
        try:
            async with self._client.post(
                self._url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                status = response.status
                answer = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            return type(exc).__name__, batch
        if status != 200:
            return f"status {status}", batch
        try:
            results = json.loads(answer)["results"]
            statuses = [int(result["status"]) for result in results]
        except (ValueError, KeyError, TypeError):
            return "an unusable answer", batch
        if len(statuses) != len(batch):
            return "an unusable answer", batch
        unsettled = []
        for report, item_status in zip(batch, statuses, strict=True):
            if item_status in (200, 404, 409):
                if item_status != 200:
                    self._log_refused(report.job, item_status)
                _settle(report, True)
            else:
                unsettled.append(report)
        logger.info(
            "outcomes reported",
            extra={"event": "job_callback", "jobs": len(batch), "unsettled": len(unsettled)},
        )
        return "per-entry status", unsettled

    @staticmethod
    def _log_refused(job: ClaimedJob, status: int) -> None:
        # 409: the lease is no longer current; 404: the gateway has no such job. No retry
        # can change either.
        logger.warning(
            "outcome refused: lease not current"
            if status == 409
            else "outcome refused: the gateway does not know this job",
            extra={
                "event": "job_callback",
                "job_id": job.id,
                "request_id": job.request_id,
                "status": status,
            },
        )


def _settle(report: _Report, settled: bool) -> None:
    # The job's supervision may have stopped waiting (its lease was lost): nothing to tell.
    if not report.settled.done():
        report.settled.set_result(settled)
