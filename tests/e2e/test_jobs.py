"""Async jobs through the gateway: each job type ends in a signed webhook that polling agrees
with, bad submissions queue nothing, and no process dying loses or doubles a job. Runs on the
SQLite queue, and on Redis Streams too when a Redis server is available."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from webhook_receiver import Delivery, WebhookReceiver, age_seconds

from conftest import assert_envelope, make_config, schema_validator, wait_for
from trine.credentials import ApiKey, new_key, new_webhook_secret
from trine.stack import Stack, free_port

OWNER = ApiKey("jobs-owner", new_key(), webhook_secret=new_webhook_secret())
STRANGER = ApiKey("jobs-stranger", new_key(), scopes=("jobs",))
RAG_ONLY = ApiKey("jobs-rag-only", new_key(), scopes=("rag",))

HELLO_WAT = (
    '(module (import "wasi_snapshot_preview1" "fd_write"'
    " (func $w (param i32 i32 i32 i32) (result i32)))"
    ' (memory (export "memory") 1) (data (i32.const 16) "hi\\n")'
    ' (func (export "run") (i32.store (i32.const 0) (i32.const 16))'
    " (i32.store (i32.const 4) (i32.const 3))"
    " (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"
)
# Spins until its wall-clock limit: a job that is surely still running a few seconds in.
SPIN = {
    "language": "wat",
    "code": '(module (func (export "run") (loop br 0)))',
    "limits": {"timeout_ms": 6000, "fuel": 10**15},
}
DOCS = [
    "Jobs leave the request path and report back by webhook.",
    "The sandbox runs untrusted WebAssembly under fuel and memory limits.",
    "Rate limits hold across every gateway replica.",
]


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def jobs_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One ML replica, one worker with a short lease, webhooks allowed to reach loopback."""
    shared: dict[str, str] = {"TRINE_JOBS_BACKEND": request.param}
    if request.param == "redis":
        shared["REDIS_URL"] = request.getfixturevalue("redis_url")
    gateway = shared | {
        "TRINE_JOBS_WEBHOOK_ALLOW_PRIVATE": "1",
        "TRINE_JOBS_WEBHOOK_ALLOW_HTTP": "1",
        "TRINE_JOBS_WEBHOOK_INITIAL_BACKOFF": "200ms",
        "TRINE_JOBS_WEBHOOK_MAX_BACKOFF": "1s",
        "TRINE_JOBS_MAX_ATTEMPTS": "3",
    }
    config = make_config(
        tmp_path_factory.mktemp(f"jobs-{request.param}"),
        [OWNER, STRANGER, RAG_ONLY],
        ml_replicas=1,
        env={"gateway": gateway, "worker": shared | {"TRINE_JOB_LEASE": "3"}},
    )
    with Stack(config, console=None) as s:
        yield s


@pytest.fixture(scope="module")
def owner(jobs_stack: Stack) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {OWNER.key}"}
    with httpx.Client(base_url=jobs_stack.gateway_url, headers=headers, timeout=30) as c:
        yield c


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(OWNER.webhook_secret or "").start()
    yield r
    r.stop()


def submit(client: httpx.Client, body: dict[str, Any], **headers: str) -> str:
    resp = client.post("/v1/jobs", json=body, headers=headers)
    assert resp.status_code == 202, resp.text
    job_id: str = resp.json()["id"]
    assert resp.headers["Location"] == f"/v1/jobs/{job_id}"
    return job_id


def finished(client: httpx.Client, job_id: str, timeout: float = 90) -> dict[str, Any]:
    """The job once it has succeeded or failed (polling, as a client without webhooks would)."""
    job: dict[str, Any] = {}

    def done() -> bool:
        job.update(client.get(f"/v1/jobs/{job_id}").json())
        return job["status"] in ("succeeded", "failed")

    assert wait_for(done, timeout), job
    schema_validator("Job").validate(job)
    return job


def first_delivery(receiver: WebhookReceiver, job_id: str) -> Delivery:
    assert wait_for(lambda: receiver.for_job(job_id) != [], 30), job_id
    return receiver.for_job(job_id)[0]


def queued_rows(stack: Stack) -> int:
    """Jobs the queue holds, read from the store itself."""
    gateway = stack.config.env["gateway"]
    if gateway["TRINE_JOBS_BACKEND"] == "redis":
        return len(list(redis.Redis.from_url(gateway["REDIS_URL"]).scan_iter("trine:jobs:job:*")))
    path = Path(stack.config.state_dir) / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])


def test_each_job_type_ends_in_a_signed_webhook_that_polling_agrees_with(
    owner: httpx.Client, receiver: WebhookReceiver
) -> None:
    bodies = {
        "rag.query": {"query": "How do jobs report back?", "documents": DOCS, "top_k": 1},
        "ingest": {"collection": "jobs-e2e", "documents": [{"id": "d1", "text": DOCS[0]}]},
        "sandbox.run": {"language": "wat", "code": HELLO_WAT},
    }
    ids = {
        kind: submit(owner, {"type": kind, "input": body, "webhook_url": receiver.url})
        for kind, body in bodies.items()
    }
    for kind, job_id in ids.items():
        job = finished(owner, job_id)
        assert job["status"] == "succeeded", job
        assert job["type"] == kind
        delivery = first_delivery(receiver, job_id)
        assert delivery.signature_valid
        assert age_seconds(delivery) < 300
        assert delivery.webhook_id.startswith("msg_")
        assert delivery.body["type"] == "job.succeeded"
        assert delivery.body["data"]["result"] == job["result"]
    assert finished(owner, ids["rag.query"])["result"]["sources"] == [0]
    assert finished(owner, ids["sandbox.run"])["result"]["stdout"] == "hi\n"
    found = owner.post(
        "/v1/rag/query",
        json={"query": "report back by webhook", "collection": "jobs-e2e", "top_k": 1},
    )
    assert found.status_code == 200, found.text
    assert found.json()["passages"][0]["text"] == DOCS[0]


def test_a_job_that_cannot_succeed_fails_with_a_webhook(
    owner: httpx.Client, receiver: WebhookReceiver
) -> None:
    body = {"query": "anything", "collection": "no-such-collection"}
    job_id = submit(owner, {"type": "rag.query", "input": body, "webhook_url": receiver.url})
    job = finished(owner, job_id)
    assert job["status"] == "failed" and job["result"] is None
    assert job["error"]["type"] == "not_found", job
    assert first_delivery(receiver, job_id).body["type"] == "job.failed"


def test_bad_submissions_are_refused_and_nothing_is_queued(
    jobs_stack: Stack, owner: httpx.Client
) -> None:
    before = queued_rows(jobs_stack)
    hello = {"language": "wat", "code": HELLO_WAT}
    bad = [
        {"type": "video.render", "input": {}},
        {"type": "rag.query", "input": {"documents": DOCS}},
        {"type": "rag.query", "input": {"query": "q", "documents": DOCS, "stream": True}},
        {"type": "sandbox.run", "input": {"language": "wat", "code": "(module (oops))"}},
        {"type": "ingest", "input": {"collection": "bad name!", "documents": []}},
        {"type": "sandbox.run", "input": hello, "webhook_url": "ftp://example.com/hook"},
        {"type": "sandbox.run", "input": hello, "webhook_url": "https://no-such-host.invalid/"},
        {"type": "sandbox.run", "input": hello, "extra": 1},
    ]
    for body in bad:
        assert_envelope(owner.post("/v1/jobs", json=body), 400, "invalid_request")
    json_type = {"Content-Type": "application/json"}
    resp = owner.post("/v1/jobs", content=b"{not json", headers=json_type)
    assert_envelope(resp, 400, "invalid_request")
    huge = {"type": "sandbox.run", "input": {"language": "wat", "code": "x" * (11 << 20)}}
    assert_envelope(owner.post("/v1/jobs", json=huge), 413, "payload_too_large")
    # A key without a webhook secret cannot ask for webhooks; one without the scope cannot submit.
    stranger = {"Authorization": f"Bearer {STRANGER.key}"}
    hooked = {"type": "sandbox.run", "input": hello, "webhook_url": "http://127.0.0.1:9/h"}
    resp = owner.post("/v1/jobs", json=hooked, headers=stranger)
    assert_envelope(resp, 400, "invalid_request")
    rag_only = {"Authorization": f"Bearer {RAG_ONLY.key}"}
    resp = owner.post("/v1/jobs", json={"type": "sandbox.run", "input": hello}, headers=rag_only)
    assert_envelope(resp, 403, "forbidden")
    assert queued_rows(jobs_stack) == before


def test_a_key_sees_only_its_own_jobs(owner: httpx.Client) -> None:
    job_id = submit(owner, {"type": "sandbox.run", "input": {"language": "wat", "code": HELLO_WAT}})
    stranger = {"Authorization": f"Bearer {STRANGER.key}"}
    assert_envelope(owner.get(f"/v1/jobs/{job_id}", headers=stranger), 404, "not_found")
    assert_envelope(owner.get("/v1/jobs/job_doesnotexist"), 404, "not_found")
    assert finished(owner, job_id)["status"] == "succeeded"


def test_an_idempotency_key_returns_the_same_job(owner: httpx.Client) -> None:
    body = {"type": "sandbox.run", "input": {"language": "wat", "code": HELLO_WAT}}
    key = f"idem-{free_port()}"
    first = submit(owner, body, **{"Idempotency-Key": key})
    assert submit(owner, body, **{"Idempotency-Key": key}) == first
    other = {"type": "sandbox.run", "input": {"language": "wat", "code": HELLO_WAT, "stdin": "x"}}
    resp = owner.post("/v1/jobs", json=other, headers={"Idempotency-Key": key})
    assert_envelope(resp, 400, "invalid_request")
    assert submit(owner, body, **{"Idempotency-Key": key + "-new"}) != first


def test_a_worker_killed_mid_job_leaves_it_to_succeed_exactly_once(
    jobs_stack: Stack, owner: httpx.Client, receiver: WebhookReceiver
) -> None:
    job_id = submit(owner, {"type": "sandbox.run", "input": SPIN, "webhook_url": receiver.url})
    assert wait_for(lambda: owner.get(f"/v1/jobs/{job_id}").json()["status"] == "running", 30)
    jobs_stack.service("worker-0").proc.kill()  # SIGKILL: no chance to release the job
    jobs_stack.restart("worker-0")
    job = finished(owner, job_id)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert job["result"]["status"] == "timeout"
    first_delivery(receiver, job_id)
    ids = {d.webhook_id for d in receiver.for_job(job_id)}
    assert len(ids) == 1
    assert {d.body["type"] for d in receiver.for_job(job_id)} == {"job.succeeded"}


def test_queued_jobs_survive_a_gateway_restart(jobs_stack: Stack, owner: httpx.Client) -> None:
    jobs_stack.stop_service("worker-0")
    body = {"type": "sandbox.run", "input": {"language": "wat", "code": HELLO_WAT}}
    ids = [submit(owner, body) for _ in range(5)]
    jobs_stack.restart("gateway")
    jobs_stack.restart("worker-0")
    for job_id in ids:
        assert finished(owner, job_id)["status"] == "succeeded"


def test_a_receiver_that_is_down_for_a_while_gets_the_webhook_later(owner: httpx.Client) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    body = {"type": "sandbox.run", "input": {"language": "wat", "code": HELLO_WAT}}
    job_id = submit(owner, body | {"webhook_url": url})
    assert finished(owner, job_id)["status"] == "succeeded"
    # Nothing listens yet: attempts fail with connection errors and are recorded on the job.
    assert wait_for(lambda: len(owner.get(f"/v1/jobs/{job_id}").json()["webhook"]["attempts"]) >= 2)
    receiver = WebhookReceiver(OWNER.webhook_secret or "", port=port, fail_first=2).start()
    try:
        assert wait_for(lambda: receiver.for_job(job_id) != [], 60)
        assert receiver.refused == 2 and receiver.for_job(job_id)[0].signature_valid
        webhook = owner.get(f"/v1/jobs/{job_id}").json()["webhook"]
        assert webhook["status"] == "delivered"
        statuses = [a.get("status_code") for a in webhook["attempts"]]
        assert statuses[-3:] == [503, 503, 204], webhook
    finally:
        receiver.stop()
