"""Scaled out: two gateways, two ML replicas and two workers sharing Redis and PostgreSQL, one
sandbox. Limits hold across gateways, data and jobs written through one gateway are seen
through the other, and an ML replica can leave and come back under load without failing a
request."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import make_config, wait_for
from trine.credentials import ApiKey, new_key
from trine.stack import Stack

KEY = ApiKey("cluster", new_key())
RATE, BURST = 5.0, 10
LIMITED = ApiKey("cluster-limited", new_key(), ("rag",), rate_per_second=RATE, burst=BURST)
HELLO = {"language": "wat", "code": '(module (func (export "run")))'}
DOCS = ["Replicas share one PostgreSQL database.", "Bananas are yellow.", "Paris is in France."]


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, postgres_url: str
) -> Iterator[Stack]:
    shared_redis = {"REDIS_URL": redis_url}
    config = make_config(
        tmp_path_factory.mktemp("cluster"),
        [KEY, LIMITED],
        gateways=2,
        ml_replicas=2,
        workers=2,
        env={
            # The default limit stays out of the way; LIMITED has its own.
            "gateway": shared_redis | {"TRINE_RATE_PER_SECOND": "1000", "TRINE_RATE_BURST": "1000"},
            "ml": {"DATABASE_URL": postgres_url},
            "worker": shared_redis,
        },
    )
    with Stack(config, console=None) as s:
        yield s


def client(stack: Stack, index: int, key: ApiKey = KEY) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key.key}"}
    return httpx.Client(base_url=stack.gateway_urls[index], headers=headers, timeout=30)


def test_a_rate_limit_holds_across_both_gateways_together(cluster: Stack) -> None:
    clients = [client(cluster, 0, LIMITED), client(cluster, 1, LIMITED)]
    codes: list[tuple[int, int]] = []
    lock = threading.Lock()
    started = time.monotonic()

    def hammer(which: int) -> None:
        while time.monotonic() - started < 3.0:
            code = clients[which].get("/v1/collections").status_code
            with lock:
                codes.append((which, code))

    threads = [threading.Thread(target=hammer, args=(i % 2,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    admitted = Counter(which for which, code in codes if code == 200)
    refused = Counter(which for which, code in codes if code == 429)
    assert {code for _, code in codes} == {200, 429}, Counter(codes)
    # One limit for both: each gateway alone would admit this much again.
    allowed = BURST + RATE * elapsed
    assert sum(admitted.values()) <= allowed * 1.01 + 1, (admitted, elapsed)
    assert sum(admitted.values()) >= BURST
    assert set(admitted) == {0, 1} and set(refused) == {0, 1}


def test_a_document_ingested_through_one_gateway_is_found_through_the_other(
    cluster: Stack,
) -> None:
    doc = {"id": "shared", "text": DOCS[0], "metadata": {"team": "infra"}}
    with client(cluster, 0) as first, client(cluster, 1) as second:
        resp = first.post("/v1/collections/cluster-docs/documents", json={"documents": [doc]})
        assert resp.status_code == 200, resp.text
        query = {"query": "which database do replicas share", "collection": "cluster-docs"}
        for _ in range(4):  # answered by both ML replicas in turn
            found = second.post("/v1/rag/query", json=query)
            assert found.status_code == 200, found.text
            assert found.json()["sources"] == ["shared"]


def test_a_job_submitted_through_one_gateway_is_read_through_the_other(
    cluster: Stack,
) -> None:
    with client(cluster, 0) as first, client(cluster, 1) as second:
        ids = []
        for _ in range(6):
            resp = first.post("/v1/jobs", json={"type": "sandbox.run", "input": HELLO})
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["id"])

        def all_done() -> bool:
            statuses = {second.get(f"/v1/jobs/{i}").json()["status"] for i in ids}
            return statuses == {"succeeded"}

        assert wait_for(all_done, 60)

    # Each ran once, on whichever worker claimed it first.
    def claims(job_id: str) -> list[str]:
        logs = cluster.log_text("worker-0") + cluster.log_text("worker-1")
        return [line for line in logs.splitlines() if job_id in line and '"job_claimed"' in line]

    # Log files are written by the launcher's copying threads, a moment after the fact.
    assert wait_for(lambda: all(claims(job_id) for job_id in ids))
    for job_id in ids:
        assert len(claims(job_id)) == 1, claims(job_id)


def _steady_load(stack: Stack, stop: threading.Event, answers: list[Any]) -> None:
    with client(stack, 0) as c:
        while not stop.is_set():
            resp = c.post("/v1/rag/query", json={"query": "Where is Paris?", "documents": DOCS})
            body = resp.json()
            answers.append((resp.status_code, body.get("service_id") or body))
            time.sleep(0.02)


def _ml_health(stack: Stack, name: str) -> bool:
    body = httpx.get(f"{stack.gateway_urls[0]}/readyz").json()
    return next(u["healthy"] for u in body["upstreams"] if u["name"] == name)


def test_an_ml_replica_can_leave_and_return_under_load(cluster: Stack) -> None:
    answers: list[Any] = []
    stop = threading.Event()
    load = threading.Thread(target=_steady_load, args=(cluster, stop, answers))
    load.start()
    try:
        assert wait_for(lambda: {"ml-0", "ml-1"} <= {s for _, s in answers}, 30)
        cluster.stop_service("ml-1")
        assert wait_for(lambda: not _ml_health(cluster, "ml-1"), 30)
        assert httpx.get(f"{cluster.gateway_urls[0]}/readyz").status_code == 200
        mark = len(answers)
        assert wait_for(lambda: len(answers) > mark + 30, 30)
        assert {s for _, s in answers[mark:]} == {"ml-0"}
        cluster.restart("ml-1")
        assert wait_for(lambda: _ml_health(cluster, "ml-1"), 60)
        back = len(answers)
        assert wait_for(lambda: "ml-1" in {s for _, s in answers[back:]}, 30)
    finally:
        stop.set()
        load.join()
    failed = [a for a in answers if a[0] != 200]
    assert failed == [], failed[:3]
