from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from constants import AUTH

DOCS = ["The gateway checks API keys.", "Bananas are yellow.", "Rust runs wasm modules."]


def assert_envelope(response: object, status: int, error_type: str) -> dict[str, str]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    error: dict[str, str] = body["error"]
    assert set(error) == {"type", "message", "request_id"}
    assert error["type"] == error_type
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]  # type: ignore[attr-defined]
    return error


def test_healthz_needs_no_token(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service_id": "ml-test"}


@pytest.mark.parametrize("headers", [{}, {"X-Trine-Internal-Token": "wrong-token-0123456789"}])
def test_rag_query_requires_internal_token(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/rag/query", headers=headers, json={"query": "q", "documents": DOCS})
    assert_envelope(response, 401, "unauthorized")


def test_bad_json_without_token_is_still_unauthorized(client: TestClient) -> None:
    response = client.post(
        "/rag/query", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert_envelope(response, 401, "unauthorized")


def test_rag_query_happy_path(client: TestClient) -> None:
    response = client.post(
        "/rag/query",
        headers=AUTH,
        json={"query": "Who checks API keys?", "documents": DOCS, "top_k": 2, "fanout": "all"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sources"][0] == 0
    assert len(body["sources"]) == len(body["passages"]) == 2
    assert [p["index"] for p in body["passages"]] == body["sources"]
    assert body["passages"][0]["text"] == DOCS[0]
    assert body["passages"][0]["score"] >= body["passages"][1]["score"]
    assert body["provider"] == "extractive"
    assert body["model"] == "extractive-v1"
    assert body["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert body["service_id"] == "ml-test"


def test_top_k_is_capped_at_document_count(client: TestClient) -> None:
    response = client.post(
        "/rag/query", headers=AUTH, json={"query": "fruit", "documents": DOCS, "top_k": 50}
    )
    assert response.status_code == 200
    assert sorted(response.json()["sources"]) == [0, 1, 2]


def test_documents_are_embedded_once_across_queries(client: TestClient) -> None:
    rag = client.app.state.rag  # type: ignore[attr-defined]
    documents = [f"document number {i} about caching" for i in range(5)]
    client.post("/rag/query", headers=AUTH, json={"query": "first", "documents": documents})
    texts_before = rag.embedder.texts_embedded
    client.post("/rag/query", headers=AUTH, json={"query": "second", "documents": documents})
    # Only the new query (and none of the documents) reached the model.
    assert rag.embedder.texts_embedded - texts_before == 1


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"query": "", "documents": DOCS}, "query"),
        ({"query": "   ", "documents": DOCS}, "query"),
        ({"query": "q", "documents": []}, "documents"),
        ({"query": "q", "documents": ["ok", ""]}, "documents"),
        ({"query": "q"}, "documents"),
        ({"documents": DOCS}, "query"),
        ({"query": "q", "documents": DOCS, "top_k": 0}, "top_k"),
        ({"query": "q", "documents": DOCS, "top_k": 51}, "top_k"),
        ({"query": "q", "documents": DOCS, "top_k": "three"}, "top_k"),
        ({"query": "q", "documents": DOCS, "collection": "handbook"}, "not both"),
        ({"query": "q", "collection": "Bad Name"}, "collection"),
        ({"query": "q", "collection": "c", "mode": "fuzzy"}, "mode"),
        ({"query": "q", "collection": "c", "filter": {"k": {"nin": [1]}}}, "filter"),
        ([1, 2], "JSON object"),
    ],
)
def test_invalid_requests_are_400(client: TestClient, body: object, fragment: str) -> None:
    response = client.post("/rag/query", headers=AUTH, json=body)
    error = assert_envelope(response, 400, "invalid_request")
    assert fragment in error["message"]


def test_bad_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/rag/query",
        headers={**AUTH, "content-type": "application/json"},
        content=b'{"query": "q", "documents": [',
    )
    error = assert_envelope(response, 400, "invalid_request")
    assert "JSON" in error["message"]


def test_unknown_route_is_404(client: TestClient) -> None:
    assert_envelope(client.get("/nope", headers=AUTH), 404, "not_found")


def test_wrong_method_is_405(client: TestClient) -> None:
    assert_envelope(client.get("/rag/query", headers=AUTH), 405, "method_not_allowed")
    assert_envelope(client.delete("/healthz"), 405, "method_not_allowed")


def test_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    error = client.post("/rag/query", headers={"X-Request-ID": "abc-456"}, json={}).json()
    assert error["error"]["request_id"] == "abc-456"


def test_request_id_is_generated_when_missing_or_insane(client: TestClient) -> None:
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) >= 16
    replaced = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert replaced.headers["x-request-id"] not in ("", "bad id\twith spaces")


def test_request_lines_carry_request_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client.post(
        "/rag/query",
        headers={**AUTH, "X-Request-ID": "log-rid-1"},
        json={"query": "fruit", "documents": DOCS},
    )
    lines = [r for r in caplog.records if getattr(r, "request_id", None) == "log-rid-1"]
    assert any(getattr(r, "event", None) == "request" for r in lines)
    # A request that completed normally was not cancelled.
    assert not any(getattr(r, "event", None) == "request_cancelled" for r in caplog.records)
