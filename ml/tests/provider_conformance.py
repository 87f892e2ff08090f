"""Checks every LLM provider must pass. Each provider's test module subclasses
:class:`ProviderConformance` and supplies a ``make_provider`` fixture; the provider is built
inside the event loop that uses it, as the app's lifespan does."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from trine_ml.providers.base import Answer, LLMProvider, Passage

PASSAGES = [
    Passage(index=2, score=0.8, text="The gateway authenticates API keys. It also rate limits."),
    Passage(index=0, score=0.4, text="The sandbox runs WebAssembly under fuel limits."),
]
QUERY = "What does the gateway do?"

ProviderFactory = Callable[[], LLMProvider]


def ask(make_provider: ProviderFactory, query: str = QUERY) -> tuple[LLMProvider, Answer]:
    async def scenario() -> tuple[LLMProvider, Answer]:
        provider = make_provider()
        try:
            return provider, await provider.answer(query, PASSAGES)
        finally:
            await provider.aclose()

    return asyncio.run(scenario())


class ProviderConformance:
    def test_answers_with_text_and_names(self, make_provider: ProviderFactory) -> None:
        provider, answer = ask(make_provider)
        assert answer.text.strip()
        assert answer.provider == provider.name
        assert answer.model

    def test_citations_point_at_given_passages(self, make_provider: ProviderFactory) -> None:
        _, answer = ask(make_provider)
        cited = [int(n) for n in re.findall(r"\[(\d+)\]", answer.text)]
        assert cited, answer.text
        assert all(1 <= n <= len(PASSAGES) for n in cited)

    def test_usage_is_non_negative(self, make_provider: ProviderFactory) -> None:
        _, answer = ask(make_provider)
        assert answer.input_tokens >= 0
        assert answer.output_tokens >= 0
