"""The SQLite job queue: the shared conformance checks, plus the schema file and the
connection settings the contract fixes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from job_queue_conformance import HarnessFactory, JobQueueConformance, QueueHarness
from queue_harness import SQLiteHarness
from trine_ml.jobs.sqlite_queue import connect, schema_sql

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def harness(tmp_path: Path) -> HarnessFactory:
    async def build() -> QueueHarness:
        return SQLiteHarness(tmp_path / "jobs.sqlite3")

    return build


class TestSQLiteJobQueueConformance(JobQueueConformance):
    pass


def test_packaged_schema_is_api_jobs_sql() -> None:
    assert schema_sql().encode() == (REPO / "api" / "jobs.sql").read_bytes()


def test_sqlite_supports_update_returning() -> None:
    assert sqlite3.sqlite_version_info >= (3, 35, 0)


def test_connection_follows_the_contract(tmp_path: Path) -> None:
    conn = connect(tmp_path / "nested" / "jobs.sqlite3")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (5000,)
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {"jobs", "webhook_deliveries"} <= tables
        conn.executescript(schema_sql())  # idempotent
    finally:
        conn.close()
