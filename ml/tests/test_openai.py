"""The OpenAI-compatible provider, driven through the real SDK against a local fake Chat
Completions server (JSON and server-sent events)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from constants import AUTH
from provider_conformance import PASSAGES, QUERY, ProviderConformance
from servers import PROVIDER_SECRET, FakeOpenAI
from sse import parse_events
from trine_ml.app import create_app
from trine_ml.embedding import OpenVinoEmbedder
from trine_ml.errors import UpstreamError, UpstreamTimeout
from trine_ml.providers.base import Answer
from trine_ml.providers.openai import OpenAIProvider
from trine_ml.settings import Settings

API_KEY = "sk-openai-test-not-real"


def make_provider(url: str, *, timeout_s: float = 10.0, max_retries: int = 0) -> OpenAIProvider:
    return OpenAIProvider.create(
        api_key=API_KEY,
        base_url=url,
        model="local-model",
        max_tokens=128,
        timeout_s=timeout_s,
        max_retries=max_retries,
    )


@pytest.fixture(name="make_provider")
def make_provider_fixture(fake_openai: tuple[FakeOpenAI, str]) -> Callable[[], OpenAIProvider]:
    return lambda: make_provider(fake_openai[1])


class TestOpenAIConformance(ProviderConformance):
    pass


def test_answer_and_request_shape(fake_openai: tuple[FakeOpenAI, str]) -> None:
    fake, url = fake_openai

    async def scenario() -> Answer:
        provider = make_provider(url)
        try:
            return await provider.answer(QUERY, PASSAGES)
        finally:
            await provider.aclose()

    answer = asyncio.run(scenario())
    assert (answer.text, answer.provider, answer.model) == (
        fake.answer_text,
        "openai",
        "local-model",
    )
    assert (answer.input_tokens, answer.output_tokens) == (123, 11)
    (request,) = fake.requests
    assert request["headers"]["authorization"] == f"Bearer {API_KEY}"
    body = request["body"]
    assert body["model"] == "local-model"
    assert body["max_tokens"] == 128
    assert body["messages"][0]["role"] == "system"
    assert "[1] The gateway authenticates API keys." in body["messages"][1]["content"]


def test_stream_yields_pieces_then_the_answer(fake_openai: tuple[FakeOpenAI, str]) -> None:
    fake, url = fake_openai

    async def scenario() -> list[str | Answer]:
        provider = make_provider(url)
        try:
            return [item async for item in provider.stream(QUERY, PASSAGES)]
        finally:
            await provider.aclose()

    items = asyncio.run(scenario())
    pieces, final = items[:-1], items[-1]
    assert len(pieces) > 3
    assert all(isinstance(p, str) for p in pieces)
    assert isinstance(final, Answer)
    assert "".join(p for p in pieces if isinstance(p, str)) == fake.answer_text == final.text
    assert (final.input_tokens, final.output_tokens) == (123, 11)
    assert fake.requests[0]["body"]["stream"] is True


@pytest.mark.parametrize("mode", ["rate_limited", "server_error"])
def test_retryable_failures_are_retried_then_upstream_error(
    fake_openai: tuple[FakeOpenAI, str], mode: str
) -> None:
    fake, url = fake_openai
    fake.mode = mode  # type: ignore[assignment]

    async def scenario() -> None:
        provider = make_provider(url, max_retries=2)
        try:
            with pytest.raises(UpstreamError) as caught:
                await provider.answer(QUERY, PASSAGES)
            assert PROVIDER_SECRET not in str(caught.value)
            assert ("429" if mode == "rate_limited" else "503") in str(caught.value)
        finally:
            await provider.aclose()

    asyncio.run(scenario())
    assert len(fake.requests) == 3  # the first call and two bounded retries


def test_a_transient_failure_is_retried_to_success(fake_openai: tuple[FakeOpenAI, str]) -> None:
    fake, url = fake_openai
    fake.mode = "flaky"

    async def scenario() -> Answer:
        provider = make_provider(url, max_retries=2)
        try:
            return await provider.answer(QUERY, PASSAGES)
        finally:
            await provider.aclose()

    assert asyncio.run(scenario()).text == fake.answer_text
    assert len(fake.requests) == 2


def test_stall_is_upstream_timeout(fake_openai: tuple[FakeOpenAI, str]) -> None:
    fake, url = fake_openai
    fake.mode = "stall"

    async def scenario() -> None:
        provider = make_provider(url, timeout_s=0.5)
        try:
            with pytest.raises(UpstreamTimeout):
                await provider.answer(QUERY, PASSAGES)
        finally:
            await provider.aclose()

    asyncio.run(scenario())


@pytest.fixture
def openai_client(
    make_settings: Callable[..., Settings],
    embedding_model: OpenVinoEmbedder,
    fake_openai: tuple[FakeOpenAI, str],
) -> Iterator[tuple[TestClient, FakeOpenAI]]:
    fake, url = fake_openai
    settings = make_settings(
        llm_provider="openai",
        openai_base_url=url,
        openai_model="local-model",
        llm_timeout_s=0.5,
        llm_max_retries=0,
    )
    with TestClient(create_app(settings, embedder=embedding_model)) as client:
        yield client, fake


BODY = {"query": "What does the gateway do?", "documents": ["The gateway checks keys.", "Fruit."]}


def test_api_answers_with_openai(openai_client: tuple[TestClient, FakeOpenAI]) -> None:
    client, fake = openai_client
    response = client.post("/rag/query", headers=AUTH, json=BODY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["provider"], body["model"], body["answer"]) == (
        "openai",
        "local-model",
        fake.answer_text,
    )
    assert body["usage"] == {"input_tokens": 123, "output_tokens": 11}
    # Without a key the SDK still gets one, and a local server ignores it.
    assert fake.requests[0]["headers"]["authorization"] == "Bearer unused"


def test_api_streams_openai_tokens(openai_client: tuple[TestClient, FakeOpenAI]) -> None:
    client, fake = openai_client
    with client.stream("POST", "/rag/query", headers=AUTH, json={**BODY, "stream": True}) as resp:
        assert resp.status_code == 200
        events = parse_events(resp.iter_lines())
    tokens = [data["text"] for kind, data in events if kind == "token"]
    assert len(tokens) > 3
    assert "".join(tokens) == fake.answer_text
    assert events[-1][0] == "done"
    assert events[-1][1]["answer"] == fake.answer_text
    assert events[-1][1]["usage"] == {"input_tokens": 123, "output_tokens": 11}


@pytest.mark.parametrize(
    ("mode", "status", "error_type"),
    [("rate_limited", 502, "upstream_error"), ("stall", 504, "upstream_timeout")],
)
@pytest.mark.parametrize("streamed", [False, True])
def test_api_maps_failures(
    openai_client: tuple[TestClient, FakeOpenAI],
    mode: str,
    status: int,
    error_type: str,
    streamed: bool,
) -> None:
    client, fake = openai_client
    fake.mode = mode  # type: ignore[assignment]
    response = client.post("/rag/query", headers=AUTH, json={**BODY, "stream": streamed})
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type
    assert PROVIDER_SECRET not in response.text


def test_settings_need_a_base_url_or_key(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValueError, match="TRINE_OPENAI"):
        make_settings(llm_provider="openai")
    assert make_settings(llm_provider="openai", openai_api_key="k").resolved_provider == "openai"
