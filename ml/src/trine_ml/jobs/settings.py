"""Worker configuration: the ML service's settings (the jobs run its code in process) plus
the queue, the gateway callback and the sandbox."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from trine_ml.settings import Settings


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerSettings(Settings):
    """Every field reads ``TRINE_<FIELD>`` except ``REDIS_URL``. Built once in the entry
    point (or with explicit values in tests)."""

    gateway_url: str = Field(
        default="http://127.0.0.1:8080", description="Base URL of the outcome callback."
    )
    sandbox_url: str = Field(default="http://127.0.0.1:8200", description="The sandbox's base.")
    sandbox_timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="Per sandbox call, queueing there included."
    )
    jobs_sqlite_path: Path = Field(
        default=Path("data/jobs.sqlite3"), description="The queue file shared with the gateway."
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "redis_url")
    )
    jobs_backend: Literal["auto", "sqlite", "redis"] = Field(
        default="auto", description="auto = redis when REDIS_URL is set, else sqlite."
    )
    worker_id: str = Field(
        default_factory=default_worker_id, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
    )
    job_lease: float = Field(default=30.0, ge=0.1, le=3600, description="Lease, seconds.")
    worker_concurrency: int = Field(default=1, ge=1, le=64)
    worker_shutdown_grace: float = Field(default=20.0, ge=0, le=3600)
    worker_claim_ahead: float = Field(
        default=0.05,
        ge=0,
        le=3600,
        description="Seconds of expected work a slot claims beyond its current job (at the"
        " pace of its recent jobs, at most 16 jobs and a tenth of the lease); 0: one at a time.",
    )
    worker_poll_ms: int = Field(
        default=50, ge=1, le=10_000, description="SQLite: the wait between polls when idle."
    )

    @field_validator("redis_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("gateway_url", "sandbox_url")
    @classmethod
    def _check_http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be redis://host:port[/db], rediss://... or unix://...")
        return value

    @model_validator(mode="after")
    def _check_backend(self) -> WorkerSettings:
        if self.jobs_backend == "redis" and self.redis_url is None:
            raise ValueError("TRINE_JOBS_BACKEND=redis needs REDIS_URL")
        return self

    @property
    def resolved_backend(self) -> Literal["sqlite", "redis"]:
        if self.jobs_backend == "auto":
            return "redis" if self.redis_url else "sqlite"
        return self.jobs_backend

    @property
    def lease_ms(self) -> int:
        return round(self.job_lease * 1000)
