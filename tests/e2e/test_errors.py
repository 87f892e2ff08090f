"""Every failure through the gateway is the public error envelope with the right status."""

from __future__ import annotations

import contextlib
import http.client
import socket
from urllib.parse import urlsplit

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


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NOT AN HTTP REQUEST\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * (2 << 20) + b"\r\n\r\n", 431),
    ],
    ids=["malformed", "no-host", "huge-headers"],
)
def test_unreadable_request_gets_the_envelope(stack: Stack, raw: bytes, status: int) -> None:
    """Requests the HTTP server itself refuses still answer in the envelope, then close."""
    gateway = urlsplit(stack.gateway_url)
    with socket.create_connection((gateway.hostname, gateway.port), timeout=10) as sock:
        # The server may answer and stop reading before the rest of a huge request is sent.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        resp = httpx.Response(answer.status, headers=answer.getheaders(), content=answer.read())
        assert resp.headers["Connection"] == "close"
        assert sock.recv(1) == b"", "the connection stays open after the refusal"
    assert_envelope(resp, status, "invalid_request")
