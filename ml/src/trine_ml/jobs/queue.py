"""The queue protocol every backend implements (api/jobs.md): claim, renew, release and
acknowledge, all keyed by the lease the claim took."""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

JOB_TYPES = ("rag.query", "ingest", "sandbox.run")


def now_ms() -> int:
    """Unix milliseconds: the contract's clock."""
    return time.time_ns() // 1_000_000


def new_lease_token() -> str:
    """128 random bits, base64url without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job this worker holds a lease on. ``input`` is the raw JSON text the gateway
    stored; ``entry_id`` is the Redis stream entry it came from (None for SQLite)."""

    id: str
    type: str
    input: str
    attempts: int
    max_attempts: int
    request_id: str
    lease_token: str
    entry_id: str | None = None


class JobQueue(Protocol):
    """A backend of the job queue. Every method may be called concurrently from the event
    loop; implementations keep blocking work off it. Leases last ``lease_ms`` from the
    claim or the last renewal."""

    async def claim(self, limit: int = 1) -> list[ClaimedJob]:
        """Takes up to ``limit`` runnable jobs (queued and available, or running with an
        expired lease and attempts left), each with a lease of its own, in claim order; an
        empty list when there is none right now. A backend that can block (Redis) waits a
        little before returning an empty list."""
        ...

    async def renew(self, job: ClaimedJob) -> bool:
        """Extends the lease; False if it is no longer this job's current lease."""
        ...

    async def release(self, job: ClaimedJob) -> bool:
        """Puts the job back to ``queued`` at once without counting the attempt; False if
        the lease was no longer current (then nothing changed)."""
        ...

    async def ack(self, job: ClaimedJob) -> None:
        """Called once the gateway has accepted the job's outcome; drops any delivery state
        the backend keeps (the Redis stream entry). A no-op for SQLite."""
        ...

    async def aclose(self) -> None: ...
