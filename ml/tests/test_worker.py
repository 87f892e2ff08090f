"""The worker end to end against a fake gateway and a fake sandbox: real rag.query and
ingest in process (the real embedder), signed callbacks, failed vs retry, callback retries,
lease loss and graceful shutdown. Waits are bounded only to turn a hang into a failure."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from constants import AUTH, TOKEN
from job_fakes import Callback, FakeGateway, FakeSandbox
from queue_harness import RedisHarness, SQLiteHarness
from servers import serve_in_thread
from trine_ml.app import create_app
from trine_ml.embedding import OpenVinoEmbedder
from trine_ml.jobs.callback import Outcome, OutcomeReporter
from trine_ml.jobs.queue import ClaimedJob, now_ms
from trine_ml.jobs.redis_queue import GROUP, STREAM
from trine_ml.jobs.service import run_worker
from trine_ml.jobs.settings import WorkerSettings

HANG_GUARD_S = 60.0


@pytest.fixture
def sandbox() -> Iterator[tuple[FakeSandbox, str]]:
    fake = FakeSandbox()
    with serve_in_thread(fake.app()) as url:
        yield fake, url


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[FakeGateway, str]]:
    fake = FakeGateway(TOKEN, db_path=tmp_path / "jobs.sqlite3")
    with serve_in_thread(fake.app()) as url:
        yield fake, url


@pytest.fixture
def queue_db(tmp_path: Path) -> Iterator[SQLiteHarness]:
    harness = SQLiteHarness(tmp_path / "jobs.sqlite3")
    yield harness
    asyncio.run(harness.aclose())


@pytest.fixture
def make_worker_settings(
    tmp_path: Path, gateway: tuple[FakeGateway, str], sandbox: tuple[FakeSandbox, str]
) -> Callable[..., WorkerSettings]:
    def build(**overrides: Any) -> WorkerSettings:
        values: dict[str, Any] = {
            "internal_token": TOKEN,
            "service_id": "ml-test",
            "llm_provider": "extractive",
            "data_dir": tmp_path,
            "gateway_url": gateway[1],
            "sandbox_url": sandbox[1],
            "jobs_sqlite_path": tmp_path / "jobs.sqlite3",
            "jobs_backend": "sqlite",
            "worker_id": "w-test",
            "worker_poll_ms": 10,
        }
        values.update(overrides)
        return WorkerSettings(**values)

    return build


WorkerBody = Callable[[asyncio.Event], Awaitable[None]]


def with_worker(settings: WorkerSettings, model: OpenVinoEmbedder, body: WorkerBody) -> None:
    """Runs a worker while ``body`` runs; then stops it and waits for it to return."""

    async def main() -> None:
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(settings, stop, embedder=model))
        try:
            await body(stop)
        finally:
            stop.set()
            await asyncio.wait_for(worker, HANG_GUARD_S)

    asyncio.run(main())


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "the worker never got there"
        await asyncio.sleep(0.01)


def sandbox_input(code: str) -> str:
    return json.dumps({"language": "python", "code": code})


def outcomes_by_job(callbacks: list[Callback]) -> dict[str, dict[str, Any]]:
    return {c.job_id: c.body for c in callbacks}


def test_jobs_run_in_process_and_report_signed_outcomes(
    make_worker_settings: Callable[..., WorkerSettings],
    gateway: tuple[FakeGateway, str],
    sandbox: tuple[FakeSandbox, str],
    queue_db: SQLiteHarness,
    embedding_model: OpenVinoEmbedder,
    make_settings: Callable[..., Any],
) -> None:
    fake_gateway, fake_sandbox = gateway[0], sandbox[0]
    ingest = {
        "collection": "kb",
        "documents": [
            {"id": "keys", "text": "The gateway checks API keys.", "metadata": {"k": "v"}},
            {"id": "fruit", "text": "Bananas are yellow."},
        ],
    }
    query = {"query": "Who checks keys?", "collection": "kb", "top_k": 2}
    jobs = [
        ("job_ingest", "ingest", json.dumps(ingest)),
        ("job_rag", "rag.query", json.dumps(query)),
        ("job_inline", "rag.query", json.dumps({"query": "q?", "documents": ["a", "b"]})),
        ("job_run", "sandbox.run", sandbox_input("ok")),
        ("job_guest_timeout", "sandbox.run", sandbox_input("timeout")),
    ]
    start = now_ms() - 10_000
    for i, (job_id, job_type, body) in enumerate(jobs):
        queue_db.enqueue_now(
            job_id,
            job_type=job_type,
            input_json=body,
            available_at=start + i,
            request_id=f"req-{job_id}",
        )

    async def body(_: asyncio.Event) -> None:
        await until(lambda: len(fake_gateway.accepted()) == len(jobs))

    with_worker(make_worker_settings(), embedding_model, body)

    callbacks = fake_gateway.all()
    assert [c.status for c in callbacks] == [200] * len(jobs)  # signatures verified
    assert [c.job_id for c in callbacks] == [job_id for job_id, _, _ in jobs]  # claim order
    for callback in callbacks:
        assert callback.body["outcome"] == "succeeded"
        assert callback.body["lease_token"]
        assert queue_db.record_now(callback.job_id)["status"] == "succeeded"
    results = {c.job_id: c.body["result"] for c in callbacks}
    assert results["job_ingest"] == {"collection": "kb", "documents": 2, "chunks": 2}
    assert results["job_run"]["status"] == "ok"
    assert results["job_guest_timeout"]["status"] == "timeout"
    # The same JSON as the synchronous routes give on the same store.
    app = create_app(make_settings(), embedder=embedding_model)
    with TestClient(app) as client:
        assert client.get("/collections/kb", headers=AUTH).json()["documents"] == 2
        for job_id, job_type, raw in jobs[1:3]:
            assert job_type == "rag.query"
            sync = client.post("/rag/query", headers=AUTH, content=raw)
            assert sync.status_code == 200
            assert results[job_id] == sync.json()
    assert results["job_rag"]["sources"][0] == "keys"
    # The sandbox got the input as sent, the token and the job's request ID.
    run_request = fake_sandbox.requests[0]
    assert run_request["body"] == json.loads(sandbox_input("ok"))
    assert run_request["headers"]["x-trine-internal-token"] == TOKEN
    assert run_request["headers"]["x-request-id"] == "req-job_run"


def test_refusals_fail_and_transient_errors_retry(
    make_worker_settings: Callable[..., WorkerSettings],
    gateway: tuple[FakeGateway, str],
    queue_db: SQLiteHarness,
    embedding_model: OpenVinoEmbedder,
) -> None:
    fake_gateway = gateway[0]
    jobs = {
        "job_no_collection": ("rag.query", {"query": "q", "collection": "nope"}),
        "job_empty_query": ("rag.query", {"query": ""}),
        "job_stream": ("rag.query", {"query": "q", "documents": ["a"], "stream": True}),
        "job_bad_name": ("ingest", {"collection": "Bad Name", "documents": [{"text": "x"}]}),
        "job_no_docs": ("ingest", {"collection": "kb", "documents": []}),
        "job_bad_run": ("sandbox.run", {"language": "cobol", "code": "bad"}),
        "job_busy": ("sandbox.run", {"language": "python", "code": "busy"}),
        "job_no_runtime": ("sandbox.run", {"language": "python", "code": "missing"}),
    }
    for job_id, (job_type, body) in jobs.items():
        queue_db.enqueue_now(job_id, job_type=job_type, input_json=json.dumps(body))

    async def body(_: asyncio.Event) -> None:
        await until(lambda: len(fake_gateway.accepted()) == len(jobs))

    with_worker(make_worker_settings(), embedding_model, body)

    outcomes = outcomes_by_job(fake_gateway.accepted())
    kinds = {job_id: (o["outcome"], o["error"]["type"]) for job_id, o in outcomes.items()}
    assert kinds == {
        "job_no_collection": ("failed", "not_found"),
        "job_empty_query": ("failed", "invalid_request"),
        "job_stream": ("failed", "invalid_request"),
        "job_bad_name": ("failed", "invalid_request"),
        "job_no_docs": ("failed", "invalid_request"),
        "job_bad_run": ("failed", "invalid_request"),
        "job_busy": ("retry", "unavailable"),
        # A 503 too, but no later attempt can find the interpreter: failed at once.
        "job_no_runtime": ("failed", "unavailable"),
    }
    assert outcomes["job_bad_run"]["error"]["message"] == "unknown language 'cobol'"
    assert outcomes["job_empty_query"]["error"]["message"].startswith("query")
    assert "result" not in outcomes["job_busy"]
    assert queue_db.record_now("job_busy")["status"] == "queued"
    assert queue_db.record_now("job_bad_run")["status"] == "failed"
    assert queue_db.record_now("job_no_runtime")["status"] == "failed"
    assert outcomes["job_no_runtime"]["error"]["message"] == (
        "language 'python' is not installed on this sandbox"
    )


def test_unreachable_sandbox_is_a_retry(
    make_worker_settings: Callable[..., WorkerSettings],
    gateway: tuple[FakeGateway, str],
    queue_db: SQLiteHarness,
    embedding_model: OpenVinoEmbedder,
) -> None:
    fake_gateway = gateway[0]
    queue_db.enqueue_now("job_a", input_json=sandbox_input("ok"))

    async def body(_: asyncio.Event) -> None:
        await until(lambda: len(fake_gateway.accepted()) == 1)

    settings = make_worker_settings(sandbox_url="http://127.0.0.1:9")  # discard: refused
    with_worker(settings, embedding_model, body)
    outcome = fake_gateway.accepted()[0].body
    assert (outcome["outcome"], outcome["error"]["type"]) == ("retry", "upstream_error")


def test_concurrent_slots_run_each_job_once(
    make_worker_settings: Callable[..., WorkerSettings],
    gateway: tuple[FakeGateway, str],
    sandbox: tuple[FakeSandbox, str],
    queue_db: SQLiteHarness,
    embedding_model: OpenVinoEmbedder,
) -> None:
    fake_gateway, fake_sandbox = gateway[0], sandbox[0]
    ids = [f"job_{i}" for i in range(8)]
    for job_id in ids:
        queue_db.enqueue_now(job_id, input_json=sandbox_input("slow"))

    async def body(_: asyncio.Event) -> None:
        await until(lambda: len(fake_gateway.accepted()) == len(ids))

    with_worker(make_worker_settings(worker_concurrency=3), embedding_model, body)
    assert sorted(c.job_id for c in fake_gateway.all()) == ids
    assert len(fake_sandbox.requests) == len(ids)
    assert {queue_db.record_now(job_id)["attempts"] for job_id in ids} == {1}


def test_a_slot_runs_on_while_a_report_is_in_flight_and_the_next_report_carries_the_rest(
    make_worker_settings: Callable[..., WorkerSettings],
    gateway: tuple[FakeGateway, str],
    sandbox: tuple[FakeSandbox, str],
    queue_db: SQLiteHarness,
    embedding_model: OpenVinoEmbedder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_gateway, fake_sandbox = gateway[0], sandbox[0]
    caplog.set_level(logging.INFO, logger="trine_ml.worker")
    fake_gateway.answer.clear()
    ids = ["job_1", "job_2", "job_3"]
    for i, job_id in enumerate(ids):
        queue_db.enqueue_now(job_id, input_json=sandbox_input("ok"), available_at=i + 1)

    def ran() -> int:
        return sum(getattr(r, "event", None) == "job_outcome" for r in caplog.records)

    async def body(_: asyncio.Event) -> None:
        # One slot, and the gateway has not answered the first report yet.
        await until(lambda: ran() == len(ids))
        assert fake_gateway.all() == []
        fake_gateway.answer.set()
        await until(lambda: len(fake_gateway.accepted()) == len(ids))

    with_worker(make_worker_settings(worker_concurrency=1), embedding_model, body)
    assert len(fake_sandbox.requests) == len(ids)
    # The first report went alone; the two outcomes that came meanwhile, together.
    requests = [c.headers["webhook-id"] for c in fake_gateway.all()]
    assert fake_gateway.requests == 2
    assert [requests.count(r) for r in dict.fromkeys(requests)] == [1, 2]
    assert {queue_db.record_now(j)["status"] for j in ids} == {"succeeded"}


def test_callback_is_retried_until_the_gateway_accepts_it(
    make_worker_settings: Callable[..., WorkerSettings],
    gateway: tuple[FakeGateway, str],
    queue_db: SQLiteHarness,
    embedding_model: OpenVinoEmbedder,
) -> None:
    fake_gateway = gateway[0]
    fake_gateway.failures = 3
    queue_db.enqueue_now("job_a", input_json=sandbox_input("ok"), request_id="req-a")

    async def body(_: asyncio.Event) -> None:
        await until(lambda: len(fake_gateway.accepted()) == 1)

    with_worker(make_worker_settings(), embedding_model, body)
    callbacks = fake_gateway.all()
    assert [c.status for c in callbacks] == [500, 500, 500, 200]
    assert len({c.headers["webhook-id"] for c in callbacks}) == 4
    assert all(c.body == callbacks[0].body for c in callbacks)
    stored = queue_db.record_now("job_a")
    assert (stored["status"], stored["attempts"]) == ("succeeded", 1)


def test_a_stale_lease_gets_409_and_the_worker_moves_on(
    make_worker_settings: Callable[..., WorkerSettings],
    gateway: tuple[FakeGateway, str],
    sandbox: tuple[FakeSandbox, str],
    queue_db: SQLiteHarness,
    embedding_model: OpenVinoEmbedder,
) -> None:
    fake_gateway, fake_sandbox = gateway[0], sandbox[0]
    queue_db.enqueue_now("job_slow", input_json=sandbox_input("slow"), available_at=1)
    queue_db.enqueue_now("job_next", input_json=sandbox_input("ok"), available_at=2)

    async def body(_: asyncio.Event) -> None:
        await asyncio.to_thread(fake_sandbox.stalled.wait, HANG_GUARD_S)
        # The gateway already finished this run another way: the token no longer matches
        # once the worker reports (the renewal sees the change too, or the callback does).
        queue_db.update_now("job_slow", status="failed", lease_token=None)
        await until(lambda: "job_next" in outcomes_by_job(fake_gateway.accepted()))

    with_worker(make_worker_settings(), embedding_model, body)
    assert all(c.status in (200, 409) for c in fake_gateway.all())
    assert queue_db.record_now("job_slow")["status"] == "failed"
    assert queue_db.record_now("job_next")["status"] == "succeeded"


def test_lost_lease_cancels_the_job_and_drops_its_result(
    make_worker_settings: Callable[..., WorkerSettings],
    gateway: tuple[FakeGateway, str],
    sandbox: tuple[FakeSandbox, str],
    queue_db: SQLiteHarness,
    embedding_model: OpenVinoEmbedder,
) -> None:
    fake_gateway, fake_sandbox = gateway[0], sandbox[0]
    queue_db.enqueue_now("job_stalled", input_json=sandbox_input("stall"))

    async def body(_: asyncio.Event) -> None:
        await asyncio.to_thread(fake_sandbox.stalled.wait, HANG_GUARD_S)
        queue_db.update_now("job_stalled", lease_token="another-worker")
        # The next renewal fails, the run is cancelled: the sandbox sees its client leave.
        await asyncio.to_thread(fake_sandbox.client_went_away.wait, HANG_GUARD_S)
        queue_db.enqueue_now("job_after", input_json=sandbox_input("ok"))
        await until(lambda: len(fake_gateway.accepted()) == 1)

    with_worker(make_worker_settings(job_lease=0.3), embedding_model, body)
    assert fake_sandbox.client_went_away.is_set()
    assert [c.job_id for c in fake_gateway.all()] == ["job_after"]
    assert queue_db.record_now("job_stalled")["lease_token"] == "another-worker"


def test_shutdown_releases_a_job_that_outlives_the_grace_period(
    make_worker_settings: Callable[..., WorkerSettings],
    gateway: tuple[FakeGateway, str],
    sandbox: tuple[FakeSandbox, str],
    queue_db: SQLiteHarness,
    embedding_model: OpenVinoEmbedder,
) -> None:
    fake_gateway, fake_sandbox = gateway[0], sandbox[0]
    queue_db.enqueue_now("job_stalled", input_json=sandbox_input("stall"))

    async def body(stop: asyncio.Event) -> None:
        await asyncio.to_thread(fake_sandbox.stalled.wait, HANG_GUARD_S)
        stop.set()

    with_worker(make_worker_settings(worker_shutdown_grace=0.1), embedding_model, body)
    stored = queue_db.record_now("job_stalled")
    assert (stored["status"], stored["attempts"], stored["lease_token"]) == ("queued", 0, None)
    assert fake_gateway.all() == []


def test_a_slot_claims_ahead_and_shutdown_releases_what_it_did_not_start(
    make_worker_settings: Callable[..., WorkerSettings],
    gateway: tuple[FakeGateway, str],
    sandbox: tuple[FakeSandbox, str],
    queue_db: SQLiteHarness,
    embedding_model: OpenVinoEmbedder,
) -> None:
    fake_gateway, fake_sandbox = gateway[0], sandbox[0]
    codes = {"job_1": "ok", "job_2": "stall", "job_3": "ok", "job_4": "ok"}
    for i, (job_id, code) in enumerate(codes.items()):
        queue_db.enqueue_now(job_id, input_json=sandbox_input(code), available_at=i + 1)

    async def body(stop: asyncio.Event) -> None:
        await asyncio.to_thread(fake_sandbox.stalled.wait, HANG_GUARD_S)
        # job_1 alone (the slot's pace unknown), then the rest in one claim: job_3 and job_4
        # wait behind the stalled job_2 under their own leases.
        assert {queue_db.record_now(j)["status"] for j in ("job_3", "job_4")} == {"running"}
        stop.set()

    # Claiming a minute ahead (a tenth of the lease) takes every job once the pace is known.
    settings = make_worker_settings(worker_claim_ahead=60, job_lease=600, worker_shutdown_grace=0.1)
    with_worker(settings, embedding_model, body)
    assert [c.job_id for c in fake_gateway.accepted()] == ["job_1"]
    assert [r["body"]["code"] for r in fake_sandbox.requests] == ["ok", "stall"]
    for job_id in ("job_2", "job_3", "job_4"):
        stored = queue_db.record_now(job_id)
        assert (stored["status"], stored["attempts"], stored["lease_token"]) == ("queued", 0, None)


def test_shutdown_lets_a_running_job_finish_within_the_grace_period(
    make_worker_settings: Callable[..., WorkerSettings],
    gateway: tuple[FakeGateway, str],
    sandbox: tuple[FakeSandbox, str],
    queue_db: SQLiteHarness,
    embedding_model: OpenVinoEmbedder,
) -> None:
    fake_gateway, fake_sandbox = gateway[0], sandbox[0]
    queue_db.enqueue_now("job_slow", input_json=sandbox_input("slow"), available_at=1)
    queue_db.enqueue_now("job_left", input_json=sandbox_input("ok"), available_at=2)

    async def body(stop: asyncio.Event) -> None:
        await asyncio.to_thread(fake_sandbox.stalled.wait, HANG_GUARD_S)
        stop.set()

    with_worker(make_worker_settings(worker_shutdown_grace=HANG_GUARD_S), embedding_model, body)
    assert [c.job_id for c in fake_gateway.accepted()] == ["job_slow"]
    assert queue_db.record_now("job_slow")["status"] == "succeeded"
    assert queue_db.record_now("job_left")["status"] == "queued"  # never claimed


def test_reporter_gives_up_when_the_lease_would_expire(
    gateway: tuple[FakeGateway, str],
) -> None:
    fake_gateway, url = gateway
    fake_gateway.failures = 1_000_000
    job = ClaimedJob("job_a", "sandbox.run", "{}", 1, 5, "req-a", "token-a")

    async def main() -> bool:
        import aiohttp

        deadline = time.monotonic() + 0.5
        async with aiohttp.ClientSession() as client:
            reporter = OutcomeReporter(client, url, TOKEN)
            return await reporter.report(job, Outcome.succeeded({}), lambda: deadline)

    assert asyncio.run(main()) is False
    assert len(fake_gateway.all()) >= 1
    assert all(c.status == 500 for c in fake_gateway.all())


def test_worker_on_redis_acknowledges_after_the_callback(
    redis_url: str,
    make_worker_settings: Callable[..., WorkerSettings],
    sandbox: tuple[FakeSandbox, str],
    embedding_model: OpenVinoEmbedder,
) -> None:
    fake_gateway = FakeGateway(TOKEN, failures=1)  # accepts from the second try
    seen: dict[str, Any] = {}

    async def prepare() -> None:
        harness = RedisHarness(redis_url)
        await harness.reset()
        await harness.enqueue("job_a", input_json=sandbox_input("ok"), request_id="req-a")
        await harness.aclose()

    async def body(_: asyncio.Event) -> None:
        harness = RedisHarness(redis_url)
        try:
            await until(lambda: len(fake_gateway.accepted()) == 1)
            deadline = time.monotonic() + HANG_GUARD_S
            while await harness.client.xlen(STREAM) > 0:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            seen["stored"] = await harness.record("job_a")
            seen["pending"] = await harness.client.xpending_range(STREAM, GROUP, "-", "+", 10)
        finally:
            await harness.aclose()

    with serve_in_thread(fake_gateway.app()) as url:
        asyncio.run(prepare())
        settings = make_worker_settings(
            gateway_url=url, jobs_backend="redis", redis_url=redis_url, job_lease=5
        )
        with_worker(settings, embedding_model, body)

    assert [c.status for c in fake_gateway.all()] == [500, 200]
    assert fake_gateway.accepted()[0].body["outcome"] == "succeeded"
    assert seen["stored"]["status"] == "running"  # the fake gateway does not apply outcomes
    assert seen["pending"] == []
