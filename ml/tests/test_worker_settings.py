"""Worker settings and the entry point: validated at start, exit 2 on bad configuration,
and a real worker process that runs a job and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from constants import TOKEN
from job_fakes import FakeGateway, FakeSandbox
from queue_harness import SQLiteHarness
from servers import serve_in_thread
from trine_ml.jobs.settings import WorkerSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("TRINE_", "ANTHROPIC_")) or name == "REDIS_URL":
            monkeypatch.delenv(name)


def test_defaults_and_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRINE_INTERNAL_TOKEN", TOKEN)
    settings = WorkerSettings()  # type: ignore[call-arg]
    assert settings.gateway_url == "http://127.0.0.1:8080"
    assert settings.sandbox_url == "http://127.0.0.1:8200"
    assert settings.jobs_sqlite_path == Path("data/jobs.sqlite3")
    assert (settings.job_lease, settings.lease_ms) == (30.0, 30_000)
    assert settings.worker_concurrency == 1
    assert settings.worker_shutdown_grace == 20.0
    assert settings.worker_claim_ahead == 0.05
    assert settings.worker_id.endswith(f"-{os.getpid()}")
    assert settings.resolved_backend == "sqlite"
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("TRINE_JOB_LEASE", "5")
    settings = WorkerSettings()  # type: ignore[call-arg]
    assert (settings.resolved_backend, settings.lease_ms) == ("redis", 5000)
    monkeypatch.setenv("TRINE_JOBS_BACKEND", "sqlite")
    assert WorkerSettings().resolved_backend == "sqlite"  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "values",
    [
        {"internal_token": "short"},
        {"internal_token": TOKEN, "gateway_url": "127.0.0.1:8080"},
        {"internal_token": TOKEN, "redis_url": "http://127.0.0.1:6379"},
        {"internal_token": TOKEN, "jobs_backend": "redis"},
        {"internal_token": TOKEN, "job_lease": 0},
        {"internal_token": TOKEN, "worker_concurrency": 0},
        {"internal_token": TOKEN, "worker_id": "has space"},
    ],
)
def test_rejects_invalid_settings(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        WorkerSettings(**values)


def worker_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRINE_", "ANTHROPIC_")) and k != "REDIS_URL"
    }
    env.update(extra)
    return env


def test_entry_point_refuses_to_start_with_invalid_settings() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trine_ml.worker"],
        env=worker_env(TRINE_INTERNAL_TOKEN="short"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["event"] == "invalid_settings"
    assert line["errors"][0]["field"] == "internal_token"
    assert "short" not in json.dumps(line["errors"])


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[tuple[FakeGateway, str, str]]:
    gateway = FakeGateway(TOKEN, db_path=tmp_path / "jobs.sqlite3")
    with (
        serve_in_thread(gateway.app()) as gateway_url,
        serve_in_thread(FakeSandbox().app()) as sandbox_url,
    ):
        yield gateway, gateway_url, sandbox_url


@pytest.mark.slow
def test_worker_process_runs_a_job_and_exits_0_on_sigterm(
    tmp_path: Path, fakes: tuple[FakeGateway, str, str]
) -> None:
    gateway, gateway_url, sandbox_url = fakes
    queue_db = SQLiteHarness(tmp_path / "jobs.sqlite3")
    queue_db.enqueue_now(
        "job_a", input_json='{"language": "python", "code": "ok"}', request_id="req-proc"
    )
    env = worker_env(
        TRINE_INTERNAL_TOKEN=TOKEN,
        TRINE_GATEWAY_URL=gateway_url,
        TRINE_SANDBOX_URL=sandbox_url,
        TRINE_JOBS_SQLITE_PATH=str(tmp_path / "jobs.sqlite3"),
        TRINE_DATA_DIR=str(tmp_path),
        TRINE_LLM_PROVIDER="extractive",
        TRINE_WORKER_ID="w-proc",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "trine_ml.worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not gateway.accepted():
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "no callback from the worker process"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.strip().splitlines()]
    events = [line.get("event") for line in lines]
    assert events.index("worker_ready") < events.index("job_claimed")
    assert events[-1] == "worker_stopped"
    claimed = next(line for line in lines if line.get("event") == "job_claimed")
    assert claimed["job_id"] == "job_a"
    assert claimed["request_id"] == "req-proc"
    assert queue_db.record_now("job_a")["status"] == "succeeded"
    asyncio.run(queue_db.aclose())
