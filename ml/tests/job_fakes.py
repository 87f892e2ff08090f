"""Fakes for the worker tests: a gateway that checks the outcome callback's signature and
applies outcomes to the SQLite queue as api/jobs.md says, and a sandbox whose behaviour
is chosen by the ``code`` of the run."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trine_ml.jobs.queue import now_ms


def expected_signature(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    """Standard Webhooks, written out independently of the worker's code."""
    key = secret.encode("utf-8")
    signed = message_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


@dataclass
class Callback:
    """One entry of a batch callback, with the request's headers and the entry's answer."""

    job_id: str
    body: dict[str, Any]
    headers: dict[str, str]
    status: int


@dataclass
class FakeGateway:
    """``POST /internal/jobs/outcomes``. ``failures`` requests are answered 500 first; then,
    with ``db_path``, each entry is applied (409 when the lease token is not the current
    one). ``requests`` counts the requests that got an answer."""

    secret: str
    db_path: Path | None = None
    failures: int = 0
    # While cleared, outcome requests wait for it before being answered.
    answer: threading.Event = field(default_factory=threading.Event)
    callbacks: list[Callback] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.answer.set()

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/internal/jobs/outcomes", self._outcomes, methods=["POST"])]
        )

    def accepted(self) -> list[Callback]:
        with self.lock:
            return [c for c in self.callbacks if c.status == 200]

    def all(self) -> list[Callback]:
        with self.lock:
            return list(self.callbacks)

    async def _outcomes(self, request: Request) -> Response:
        raw = await request.body()
        await asyncio.to_thread(self.answer.wait)
        headers = dict(request.headers)
        status = self._check(raw, headers)
        results = []
        for entry in json.loads(raw)["outcomes"]:
            job_id = entry["id"]
            entry_status = status
            if status == 200 and self.db_path is not None:
                entry_status = apply_outcome(self.db_path, entry)
            with self.lock:
                self.callbacks.append(Callback(job_id, entry, headers, entry_status))
            results.append({"id": job_id, "status": entry_status})
        with self.lock:
            self.requests += 1
        if status != 200:
            return JSONResponse({}, status_code=status)
        return JSONResponse({"results": results})

    def _check(self, raw: bytes, headers: dict[str, str]) -> int:
        """The request's status: 401 for a bad signature, 500 while failing, else 200."""
        message_id = headers.get("webhook-id", "")
        timestamp = headers.get("webhook-timestamp", "0")
        signature = headers.get("webhook-signature", "")
        if not message_id.startswith("cb_") or abs(time.time() - int(timestamp)) > 300:
            return 401
        if not hmac.compare_digest(
            signature, expected_signature(self.secret, message_id, timestamp, raw)
        ):
            return 401
        with self.lock:
            if self.failures > 0:
                self.failures -= 1
                return 500
        return 200


def apply_outcome(db_path: Path, body: dict[str, Any]) -> int:
    """The gateway's side of one entry of the callback, enough for the tests."""
    job_id = body["id"]
    conn = sqlite3.connect(db_path, timeout=5)
    try:
        row = conn.execute(
            "SELECT status, lease_token FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            return 404
        if row[0] != "running" or row[1] != body["lease_token"]:
            return 409
        now = now_ms()
        if body["outcome"] == "retry":
            conn.execute(
                "UPDATE jobs SET status = 'queued', available_at = ?, error = ?,"
                " lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,"
                " updated_at = ? WHERE id = ?",
                (now + 3_600_000, json.dumps(body["error"]), now, job_id),
            )
        else:
            conn.execute(
                "UPDATE jobs SET status = ?, result = ?, error = ?, lease_owner = NULL,"
                " lease_token = NULL, lease_expires_at = NULL, updated_at = ? WHERE id = ?",
                (
                    body["outcome"],
                    json.dumps(body.get("result")),
                    json.dumps(body.get("error")),
                    now,
                    job_id,
                ),
            )
        conn.commit()
        return 200
    finally:
        conn.close()


RUN_OK = {
    "status": "ok",
    "exit_code": 0,
    "stdout": "45\n",
    "stderr": "",
    "fuel_consumed": 1234,
    "duration_ms": 2.5,
    "truncated": False,
}


@dataclass
class FakeSandbox:
    """``POST /run``; the run's ``code`` picks the answer: ``ok``, ``timeout`` (a guest
    timeout, still 200), ``bad`` (400), ``busy`` (503), ``slow`` (200 after a moment),
    ``stall`` (no answer until the client goes away), ``missing`` (503: the language's
    interpreter is not installed)."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    stalled: threading.Event = field(default_factory=threading.Event)
    client_went_away: threading.Event = field(default_factory=threading.Event)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/run", self._run, methods=["POST"])])

    async def _run(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        code = body.get("code")
        if code == "timeout":
            return JSONResponse({**RUN_OK, "status": "timeout", "exit_code": None})
        if code == "bad":
            return _error(400, "invalid_request", "unknown language 'cobol'")
        if code == "busy":
            return _error(503, "unavailable", "every run slot is taken")
        if code == "missing":
            # The sandbox's own words (sandbox/src/error.rs), without Retry-After.
            message = f"language '{body.get('language')}' is not installed on this sandbox"
            return _error(503, "unavailable", message, retry_after=False)
        if code == "slow":
            self.stalled.set()
            await asyncio.sleep(0.3)
        if code == "stall":
            self.stalled.set()
            async with asyncio.timeout(60):
                while (await request.receive())["type"] != "http.disconnect":
                    pass
            self.client_went_away.set()
            return Response(status_code=499)
        return JSONResponse(RUN_OK)


def _error(status: int, kind: str, message: str, *, retry_after: bool = True) -> JSONResponse:
    body = {"error": {"type": kind, "message": message, "request_id": "sandbox-req"}}
    headers = {"Retry-After": "1"} if status == 503 and retry_after else None
    return JSONResponse(body, status_code=status, headers=headers)
