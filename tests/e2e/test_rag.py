"""RAG through the gateway: ranking, answer shape, round-robin over replicas, request IDs."""

from __future__ import annotations

import httpx

from conftest import schema_validator, wait_for
from trine.stack import Stack

DOCUMENTS = [
    "Bananas are yellow fruit rich in potassium, grown in tropical climates.",
    "The Rust sandbox executes WebAssembly modules with fuel and memory limits.",
    "Paris is the capital of France and is known for the Eiffel Tower.",
    "Photosynthesis converts sunlight, water and carbon dioxide into glucose in plants.",
]


def test_the_unambiguous_passage_ranks_first(client: httpx.Client) -> None:
    resp = client.post(
        "/v1/rag/query",
        json={"query": "Which city is the capital of France?", "documents": DOCUMENTS, "top_k": 2},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    schema_validator("RagAnswer").validate(body)
    assert body["sources"][0] == 2
    assert len(body["sources"]) == 2
    assert body["passages"][0]["index"] == 2
    assert body["passages"][0]["text"] == DOCUMENTS[2]
    assert body["passages"][0]["score"] >= body["passages"][1]["score"]
    assert body["provider"] == "extractive"
    assert "[1]" in body["answer"]
    assert "Paris" in body["answer"]


def test_top_k_defaults_to_three(client: httpx.Client) -> None:
    resp = client.post(
        "/v1/rag/query", json={"query": "plants and sunlight", "documents": DOCUMENTS}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["sources"][0] == 3
    assert len(resp.json()["sources"]) == 3


def test_queries_are_spread_over_both_replicas(client: httpx.Client) -> None:
    seen = set()
    for _ in range(6):
        resp = client.post("/v1/rag/query", json={"query": "fruit", "documents": DOCUMENTS})
        assert resp.status_code == 200, resp.text
        seen.add(resp.json()["service_id"])
    assert seen == {"ml-0", "ml-1"}


def test_request_id_reaches_the_ml_service(client: httpx.Client, stack: Stack) -> None:
    rid = "e2e-rag-request-id-1"
    resp = client.post(
        "/v1/rag/query",
        json={"query": "fruit", "documents": DOCUMENTS},
        headers={"X-Request-ID": rid},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Request-ID"] == rid
    replica = resp.json()["service_id"]
    assert wait_for(lambda: rid in stack.log_text(replica))
    assert wait_for(lambda: rid in stack.log_text("gateway"))


def test_a_bad_request_id_is_replaced(client: httpx.Client) -> None:
    resp = client.post(
        "/v1/rag/query",
        json={"query": "fruit", "documents": DOCUMENTS},
        headers={"X-Request-ID": "bad id with spaces; and /slashes/"},
    )
    assert resp.status_code == 200, resp.text
    rid = resp.headers["X-Request-ID"]
    assert rid and " " not in rid


def test_health_and_readiness(stack: Stack) -> None:
    assert httpx.get(f"{stack.gateway_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.gateway_url}/readyz")
    assert ready.status_code == 200
    body = ready.json()
    schema_validator("Readiness").validate(body)
    states = {u["name"]: u["healthy"] for u in body["upstreams"]}
    assert states == {"ml-0": True, "ml-1": True, "sandbox": True}


def test_metrics_count_requests(client: httpx.Client, stack: Stack) -> None:
    client.post("/v1/rag/query", json={"query": "fruit", "documents": DOCUMENTS})
    text = httpx.get(f"{stack.gateway_url}/metrics").text
    assert "/v1/rag/query" in text
