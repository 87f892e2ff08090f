"""The signed outcome callback to the gateway (api/jobs.md, "Internal callback"): Standard
Webhooks signing with the internal token as the key."""

from __future__ import annotations

import asyncio
import base64
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


def callback_body(job: ClaimedJob, outcome: Outcome) -> bytes:
    payload: dict[str, Any] = {"lease_token": job.lease_token, "outcome": outcome.kind}
    if outcome.kind == "succeeded":
        payload["result"] = outcome.result
    else:
        payload["error"] = outcome.error
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class OutcomeReporter:
    """Posts outcomes to ``{gateway}/internal/jobs/{id}/outcome``, retrying until the gateway
    answers 2xx, 409 or 404, or until the caller's lease would expire."""

    def __init__(
        self,
        client: aiohttp.ClientSession,
        gateway_url: str,
        secret: str,
        *,
        attempt_timeout_s: float = 10.0,
    ) -> None:
        self._client = client
        self._base = gateway_url.rstrip("/")
        self._secret = secret
        self._attempt_timeout_s = attempt_timeout_s

    async def report(
        self, job: ClaimedJob, outcome: Outcome, lease_deadline: Callable[[], float]
    ) -> bool:
        """True once the gateway settled the callback (applied, already applied, or refused
        for good); False if ``lease_deadline()`` (a ``time.monotonic`` value, moved on by
        renewals) passed first, leaving the job to be claimed again."""
        body = callback_body(job, outcome)
        url = f"{self._base}/internal/jobs/{job.id}/outcome"
        backoff = INITIAL_BACKOFF_S
        attempt = 0
        while True:
            attempt += 1
            problem = await self._post(job, url, body, lease_deadline)
            if problem is None:
                return True
            wait = backoff * (0.8 + 0.4 * secrets.randbelow(1001) / 1000)
            remaining = lease_deadline() - time.monotonic()
            logger.warning(
                "outcome callback failed; retrying",
                extra={
                    "event": "job_callback_retry",
                    "job_id": job.id,
                    "request_id": job.request_id,
                    "attempt": attempt,
                    "problem": problem,
                },
            )
            if remaining <= wait:
                logger.warning(
                    "outcome callback given up: the lease would expire",
                    extra={
                        "event": "job_callback_abandoned",
                        "job_id": job.id,
                        "request_id": job.request_id,
                        "attempts": attempt,
                    },
                )
                return False
            await asyncio.sleep(wait)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _post(
        self, job: ClaimedJob, url: str, body: bytes, lease_deadline: Callable[[], float]
    ) -> str | None:
        """None if the gateway settled it, else what went wrong."""
        message_id = "cb_" + secrets.token_hex(16)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "X-Request-ID": job.request_id,
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret, message_id, timestamp, body),
        }
        timeout = max(0.1, min(self._attempt_timeout_s, lease_deadline() - time.monotonic()))
        try:
            async with self._client.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                status = response.status
                await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            return type(exc).__name__
        accepted = 200 <= status < 300
        if accepted or status == 409:
            logger.info(
                "outcome accepted" if accepted else "outcome refused: lease not current",
                extra={
                    "event": "job_callback",
                    "job_id": job.id,
                    "request_id": job.request_id,
                    "status": status,
                },
            )
            return None
        if status == 404:
            # The gateway has no such job: no retry can change that.
            logger.warning(
                "outcome refused: the gateway does not know this job",
                extra={"event": "job_callback", "job_id": job.id, "request_id": job.request_id},
            )
            return None
        return f"status {status}"
