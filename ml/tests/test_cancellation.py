"""A caller that goes away cancels the request's work, including an in-flight LLM call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx
import pytest

from constants import AUTH
from servers import FakeAnthropic, serve_in_thread
from trine_ml.app import create_app
from trine_ml.embedding import OpenVinoEmbedder
from trine_ml.settings import Settings


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.mark.slow
def test_client_disconnect_cancels_llm_call(
    make_settings: Callable[..., Settings],
    embedding_model: OpenVinoEmbedder,
    fake_anthropic: tuple[FakeAnthropic, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    fake, fake_url = fake_anthropic
    fake.mode = "stall"
    settings = make_settings(
        llm_provider="anthropic",
        anthropic_api_key="sk-ant-test-key-not-real",
        anthropic_base_url=fake_url,
        llm_timeout_s=60,  # far longer than the test: only the disconnect can end the call
        llm_max_retries=0,
    )
    request_id = "cancel-me-0001"

    with serve_in_thread(create_app(settings, embedder=embedding_model)) as ml_url:

        async def call_then_hang_up() -> None:
            async with httpx.AsyncClient(base_url=ml_url, timeout=30) as client:
                call = asyncio.create_task(
                    client.post(
                        "/rag/query",
                        headers={**AUTH, "X-Request-ID": request_id},
                        json={"query": "what?", "documents": ["one doc.", "two doc."]},
                    )
                )
                stalled = await asyncio.to_thread(fake.stalled.wait, 20)
                assert stalled, "the LLM call never reached the fake provider"
                call.cancel()  # closes the connection to the ML service
                with pytest.raises(asyncio.CancelledError):
                    await call

        asyncio.run(call_then_hang_up())

        # The ML service dropped its call to the provider, long before its 60 s timeout.
        assert fake.client_went_away.wait(10), "the LLM call was not cancelled"

        def cancelled_lines() -> list[logging.LogRecord]:
            return [
                r
                for r in caplog.records
                if getattr(r, "event", None) == "request_cancelled"
                and getattr(r, "request_id", None) == request_id
            ]

        assert wait_for(lambda: len(cancelled_lines()) == 1, 5), "no request_cancelled line"
    assert not any(getattr(r, "event", None) == "request" for r in cancelled_lines())


@pytest.mark.slow
def test_client_leaving_a_stream_cancels_the_llm_stream(
    make_settings: Callable[..., Settings],
    embedding_model: OpenVinoEmbedder,
    fake_anthropic: tuple[FakeAnthropic, str],
) -> None:
    fake, fake_url = fake_anthropic
    fake.mode = "stall"  # sends the first word, then holds the stream open
    settings = make_settings(
        llm_provider="anthropic",
        anthropic_api_key="sk-ant-test-key-not-real",
        anthropic_base_url=fake_url,
        llm_timeout_s=60,
        llm_max_retries=0,
    )
    with serve_in_thread(create_app(settings, embedder=embedding_model)) as ml_url:

        async def read_first_token_then_leave() -> str:
            async with (
                httpx.AsyncClient(base_url=ml_url, timeout=30) as client,
                client.stream(
                    "POST",
                    "/rag/query",
                    headers=AUTH,
                    json={"query": "what?", "documents": ["one doc."], "stream": True},
                ) as response,
            ):
                async for line in response.aiter_lines():
                    if line.startswith("event: token"):
                        return line
            return ""

        assert asyncio.run(read_first_token_then_leave()) == "event: token"
        assert fake.client_went_away.wait(10), "the LLM stream was not cancelled"
