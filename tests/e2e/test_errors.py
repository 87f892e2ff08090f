"""Every failure through the gateway is the public error envelope with the right status."""

from __future__ import annotations

import httpx
import pytest

from conftest import assert_envelope
from trine.credentials import ApiKey
from trine.stack import Stack

RAG = {"query": "what?", "documents": ["an answer"]}


def test_missing_key_is_401(stack: Stack) -> None:
    resp = httpx.post(f"{stack.gateway_url}/v1/rag/query", json=RAG)
    assert_envelope(resp, 401, "unauthorized")


def test_unknown_key_is_401(stack: Stack) -> None:
    headers = {"Authorization": "Bearer trn_not_a_key_anyone_has"}
    resp = httpx.post(f"{stack.gateway_url}/v1/rag/query", json=RAG, headers=headers)
    assert_envelope(resp, 401, "unauthorized")


def test_key_without_the_scope_is_403(stack: Stack, rag_only_key: ApiKey) -> None:
    headers = {"Authorization": f"Bearer {rag_only_key.key}"}
    run = {"language": "wat", "code": '(module (func (export "run")))'}
    resp = httpx.post(f"{stack.gateway_url}/v1/sandbox/run", json=run, headers=headers)
    assert_envelope(resp, 403, "forbidden")
    # The same key may use the route its scope names.
    assert httpx.post(f"{stack.gateway_url}/v1/rag/query", json=RAG, headers=headers).is_success


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[1, 2, 3]", b""],
    ids=["malformed", "not-an-object", "empty"],
)
def test_bad_json_is_400(client: httpx.Client, content: bytes) -> None:
    resp = client.post(
        "/v1/rag/query", content=content, headers={"Content-Type": "application/json"}
    )
    assert_envelope(resp, 400, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [
        {"query": "", "documents": ["a"]},
        {"query": "q", "documents": []},
        {"query": "q"},
        {"query": "q", "documents": ["a"], "top_k": 0},
        {"query": 7, "documents": ["a"]},
    ],
    ids=["empty-query", "empty-documents", "no-documents", "top-k-zero", "query-not-string"],
)
def test_invalid_rag_fields_are_400(client: httpx.Client, body: dict[str, object]) -> None:
    assert_envelope(client.post("/v1/rag/query", json=body), 400, "invalid_request")


def test_oversize_body_is_413(client: httpx.Client) -> None:
    big = b'{"query": "' + b"x" * (11 * 1024 * 1024) + b'", "documents": ["a"]}'
    resp = client.post("/v1/rag/query", content=big, headers={"Content-Type": "application/json"})
    assert_envelope(resp, 413, "payload_too_large")


def test_wrong_content_type_is_415(client: httpx.Client) -> None:
    resp = client.post("/v1/rag/query", content=b"query=x", headers={"Content-Type": "text/plain"})
    assert_envelope(resp, 415, "unsupported_media_type")


def test_unknown_route_is_404(client: httpx.Client) -> None:
    assert_envelope(client.get("/v1/no-such-route"), 404, "not_found")


def test_wrong_method_is_405(client: httpx.Client) -> None:
    assert_envelope(client.get("/v1/rag/query"), 405, "method_not_allowed")
