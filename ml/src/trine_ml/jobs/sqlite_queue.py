"""The embedded backend: one SQLite file shared with the gateway (api/jobs.md, api/jobs.sql).
The statements are the contract's, verbatim."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import TypeVar

from trine_ml.jobs.queue import ClaimedJob, new_lease_token, now_ms

T = TypeVar("T")

#: ``UPDATE ... RETURNING`` arrived in SQLite 3.35.
MIN_SQLITE = (3, 35, 0)

CLAIM = """
UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = :worker,
       lease_token = :token, lease_expires_at = :now + :lease_ms, updated_at = :now
 WHERE id = (SELECT id FROM jobs
              WHERE (status = 'queued' AND available_at <= :now)
                 OR (status = 'running' AND lease_expires_at <= :now AND attempts < max_attempts)
              ORDER BY available_at LIMIT 1)
RETURNING id, type, input, attempts, max_attempts, request_id
"""

RENEW = """
UPDATE jobs SET lease_expires_at = :now + :lease_ms, updated_at = :now WHERE id = :id AND
status = 'running' AND lease_token = :token
"""

RELEASE = """
UPDATE jobs SET status = 'queued', attempts = attempts - 1, available_at = :now, lease_owner = NULL,
lease_token = NULL, lease_expires_at = NULL, updated_at = :now WHERE id = :id AND status = 'running'
AND lease_token = :token
"""


def schema_sql() -> str:
    """api/jobs.sql, shipped with the package (a test checks the copy is identical)."""
    return resources.files("trine_ml.jobs").joinpath("jobs.sql").read_text(encoding="utf-8")


def check_sqlite_version() -> None:
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise RuntimeError(
            f"the job queue needs SQLite >= 3.35 (UPDATE ... RETURNING); "
            f"this Python has {sqlite3.sqlite_version}"
        )


def connect(path: Path) -> sqlite3.Connection:
    """A connection set up as the contract says (WAL, busy_timeout 5000, synchronous
    NORMAL), with the schema applied. Autocommit: every statement is its own transaction."""
    check_sqlite_version()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(schema_sql())
    return conn


class SQLiteJobQueue:
    """:class:`~trine_ml.jobs.queue.JobQueue` on the shared SQLite file. One connection on
    one thread: a statement is a few milliseconds at most, and the claim is a single
    statement, so workers on other connections never get the same job."""

    def __init__(
        self,
        path: Path,
        *,
        worker_id: str,
        lease_ms: int,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._worker_id = worker_id
        self._lease_ms = lease_ms
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs-sqlite")
        self._conn = self._executor.submit(connect, path).result()

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, work, self._conn)

    async def claim(self, limit: int = 1) -> list[ClaimedJob]:
        now = self._clock()

        def claim(conn: sqlite3.Connection) -> list[ClaimedJob]:
            # Several claims share one transaction (one write lock, one commit), each with
            # the contract's statement and a token of its own.
            if limit > 1:
                conn.execute("BEGIN IMMEDIATE")
            jobs: list[ClaimedJob] = []
            try:
                while len(jobs) < limit:
                    token = new_lease_token()
                    params = {
                        "worker": self._worker_id,
                        "token": token,
                        "now": now,
                        "lease_ms": self._lease_ms,
                    }
                    # fetchall: the statement (and so an autocommit transaction) ends only
                    # once it is stepped to completion.
                    rows = conn.execute(CLAIM, params).fetchall()
                    if not rows:
                        break
                    job_id, job_type, raw_input, attempts, max_attempts, request_id = rows[0]
                    jobs.append(
                        ClaimedJob(
                            job_id, job_type, raw_input, attempts, max_attempts, request_id, token
                        )
                    )
                if limit > 1:
                    conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return jobs

        return await self._run(claim)

    async def renew(self, job: ClaimedJob) -> bool:
        params = {
            "id": job.id,
            "token": job.lease_token,
            "now": self._clock(),
            "lease_ms": self._lease_ms,
        }
        return await self._run(lambda conn: conn.execute(RENEW, params).rowcount == 1)

    async def release(self, job: ClaimedJob) -> bool:
        params = {"id": job.id, "token": job.lease_token, "now": self._clock()}
        return await self._run(lambda conn: conn.execute(RELEASE, params).rowcount == 1)

    async def ack(self, job: ClaimedJob) -> None:
        return None

    async def aclose(self) -> None:
        def close(conn: sqlite3.Connection) -> None:
            conn.close()

        await self._run(close)
        self._executor.shutdown(wait=True)
