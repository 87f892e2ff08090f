"""The Anthropic provider, driven through the real SDK against a local fake Messages API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from constants import AUTH
from provider_conformance import PASSAGES, QUERY, ProviderConformance
from servers import PROVIDER_SECRET, FakeAnthropic
from sse import parse_events
from trine_ml.app import create_app
from trine_ml.embedding import OpenVinoEmbedder
from trine_ml.errors import UpstreamError, UpstreamTimeout
from trine_ml.providers.anthropic import AnthropicProvider
from trine_ml.providers.base import Answer
from trine_ml.settings import Settings

API_KEY = "sk-ant-test-key-not-real"


def make_provider(url: str, *, timeout_s: float = 10.0) -> AnthropicProvider:
    return AnthropicProvider.create(
        api_key=API_KEY,
        base_url=url,
        model="claude-sonnet-4-6",
        max_tokens=256,
        timeout_s=timeout_s,
        max_retries=0,
    )


@pytest.fixture(name="make_provider")
def make_provider_fixture(
    fake_anthropic: tuple[FakeAnthropic, str],
) -> Callable[[], AnthropicProvider]:
    return lambda: make_provider(fake_anthropic[1])


class TestAnthropicConformance(ProviderConformance):
    pass


def test_answer_usage_and_request_shape(fake_anthropic: tuple[FakeAnthropic, str]) -> None:
    fake, url = fake_anthropic

    async def scenario() -> None:
        provider = make_provider(url)
        try:
            answer = await provider.answer(QUERY, PASSAGES)
        finally:
            await provider.aclose()
        assert answer.text == fake.answer_text
        assert (answer.provider, answer.model) == ("anthropic", "claude-sonnet-4-6")
        assert (answer.input_tokens, answer.output_tokens) == (321, 17)

    asyncio.run(scenario())
    (request,) = fake.requests
    headers = request["headers"]
    assert API_KEY in (headers.get("x-api-key"), headers.get("authorization", "")[7:])
    body = request["body"]
    assert body["model"] == "claude-sonnet-4-6"
    assert body["max_tokens"] == 256
    prompt = body["messages"][0]["content"]
    assert "[1] The gateway authenticates API keys." in prompt
    assert "[2] The sandbox runs WebAssembly" in prompt
    assert QUERY in prompt


@pytest.mark.parametrize(
    ("mode", "error"), [("rate_limited", UpstreamError), ("server_error", UpstreamError)]
)
def test_provider_failures_map_to_upstream_errors(
    fake_anthropic: tuple[FakeAnthropic, str], mode: str, error: type[Exception]
) -> None:
    fake, url = fake_anthropic
    fake.mode = mode  # type: ignore[assignment]

    async def scenario() -> None:
        provider = make_provider(url)
        try:
            with pytest.raises(error) as caught:
                await provider.answer(QUERY, PASSAGES)
            assert PROVIDER_SECRET not in str(caught.value)
        finally:
            await provider.aclose()

    asyncio.run(scenario())


def test_stall_maps_to_upstream_timeout(fake_anthropic: tuple[FakeAnthropic, str]) -> None:
    fake, url = fake_anthropic
    fake.mode = "stall"

    async def scenario() -> None:
        provider = make_provider(url, timeout_s=0.5)
        try:
            with pytest.raises(UpstreamTimeout):
                await provider.answer(QUERY, PASSAGES)
        finally:
            await provider.aclose()

    asyncio.run(scenario())


def test_unreachable_provider_is_upstream_error() -> None:
    async def scenario() -> None:
        provider = make_provider("http://127.0.0.1:9")  # discard port: nothing listens
        try:
            with pytest.raises(UpstreamError, match="could not reach"):
                await provider.answer(QUERY, PASSAGES)
        finally:
            await provider.aclose()

    asyncio.run(scenario())


@pytest.fixture
def anthropic_client(
    make_settings: Callable[..., Settings],
    embedding_model: OpenVinoEmbedder,
    fake_anthropic: tuple[FakeAnthropic, str],
) -> Iterator[tuple[TestClient, FakeAnthropic]]:
    fake, url = fake_anthropic
    settings = make_settings(
        llm_provider="auto",
        anthropic_api_key=API_KEY,
        anthropic_base_url=url,
        llm_timeout_s=0.5,
        llm_max_retries=0,
    )
    with TestClient(create_app(settings, embedder=embedding_model)) as client:
        yield client, fake


QUERY_BODY = {
    "query": "What does the gateway do?",
    "documents": ["The gateway checks API keys.", "Bananas are yellow.", "Rust runs wasm."],
    "top_k": 2,
}


def test_api_uses_anthropic_when_key_is_set(
    anthropic_client: tuple[TestClient, FakeAnthropic],
) -> None:
    client, fake = anthropic_client
    response = client.post("/rag/query", headers=AUTH, json=QUERY_BODY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["provider"] == "anthropic"
    assert body["model"] == "claude-sonnet-4-6"
    assert body["answer"] == fake.answer_text
    assert body["usage"] == {"input_tokens": 321, "output_tokens": 17}
    assert body["sources"][0] == 0
    assert len(body["passages"]) == 2


@pytest.mark.parametrize(
    ("mode", "status", "error_type"),
    [
        ("rate_limited", 502, "upstream_error"),
        ("server_error", 502, "upstream_error"),
        ("stall", 504, "upstream_timeout"),
    ],
)
def test_api_maps_provider_failures(
    anthropic_client: tuple[TestClient, FakeAnthropic], mode: str, status: int, error_type: str
) -> None:
    client, fake = anthropic_client
    fake.mode = mode  # type: ignore[assignment]
    response = client.post(
        "/rag/query", headers={**AUTH, "X-Request-ID": "req-up-1"}, json=QUERY_BODY
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == error_type
    assert error["request_id"] == "req-up-1"
    assert PROVIDER_SECRET not in response.text
    assert API_KEY not in response.text


def test_stream_uses_the_sdk_stream(fake_anthropic: tuple[FakeAnthropic, str]) -> None:
    fake, url = fake_anthropic

    async def scenario() -> list[object]:
        provider = make_provider(url)
        try:
            return [item async for item in provider.stream(QUERY, PASSAGES)]
        finally:
            await provider.aclose()

    items = asyncio.run(scenario())
    final = items[-1]
    assert isinstance(final, Answer)
    pieces = [p for p in items[:-1] if isinstance(p, str)]
    assert len(pieces) == len(items) - 1 > 3
    assert "".join(pieces) == fake.answer_text == final.text
    assert (final.input_tokens, final.output_tokens) == (321, 17)
    assert fake.requests[0]["body"]["stream"] is True


def test_api_streams_anthropic_tokens(anthropic_client: tuple[TestClient, FakeAnthropic]) -> None:
    client, fake = anthropic_client
    with client.stream(
        "POST", "/rag/query", headers=AUTH, json={**QUERY_BODY, "stream": True}
    ) as resp:
        assert resp.status_code == 200
        events = parse_events(resp.iter_lines())
    assert [kind for kind, _ in events][:2] == ["passage", "passage"]
    assert "".join(d["text"] for kind, d in events if kind == "token") == fake.answer_text
    assert events[-1] == ("done", {**events[-1][1], "answer": fake.answer_text})
