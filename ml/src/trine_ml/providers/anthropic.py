"""The Anthropic provider: the official SDK's Messages API, one client per app lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import anthropic
from anthropic.types import Message, TextBlock

from trine_ml.providers.base import Answer, Passage
from trine_ml.providers.sdk_errors import mapped_sdk_errors

SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages you are given. "
    "After each statement, cite the passage it comes from as [n], where n is the passage "
    "number. If the passages do not contain the answer, say so briefly. Be concise."
)


def build_prompt(query: str, passages: Sequence[Passage]) -> str:
    numbered = "\n\n".join(f"[{pos}] {p.text}" for pos, p in enumerate(passages, start=1))
    return f"Passages:\n\n{numbered}\n\nQuestion: {query}\n\nAnswer with [n] citations."


class AnthropicProvider:
    """Calls ``messages.create`` and maps the SDK's failures to upstream errors whose
    messages never carry the provider's own text or the key."""

    def __init__(self, client: anthropic.AsyncAnthropic, *, model: str, max_tokens: int) -> None:
        self._client = client
        self._model = model
        self._max_tokens = max_tokens

    @classmethod
    def create(
        cls,
        *,
        api_key: str,
        base_url: str | None,
        model: str,
        max_tokens: int,
        timeout_s: float,
        max_retries: int,
    ) -> AnthropicProvider:
        client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout_s,
            max_retries=max_retries,
        )
        return cls(client, model=model, max_tokens=max_tokens)

    @property
    def name(self) -> str:
        return "anthropic"

    @property
    def model(self) -> str:
        return self._model

    async def answer(self, query: str, passages: Sequence[Passage]) -> Answer:
        with mapped_sdk_errors(anthropic):
            message = await self._client.messages.create(
                model=self._model,
                max_tokens=self._max_tokens,
                system=SYSTEM_PROMPT,
                messages=[{"role": "user", "content": build_prompt(query, passages)}],
            )
        return self._to_answer(message)

    async def stream(self, query: str, passages: Sequence[Passage]) -> AsyncIterator[str | Answer]:
        with mapped_sdk_errors(anthropic):
            async with self._client.messages.stream(
                model=self._model,
                max_tokens=self._max_tokens,
                system=SYSTEM_PROMPT,
                messages=[{"role": "user", "content": build_prompt(query, passages)}],
            ) as events:
                async for text in events.text_stream:
                    yield text
                message = await events.get_final_message()
        yield self._to_answer(message)

    def _to_answer(self, message: Message) -> Answer:
        text = "".join(block.text for block in message.content if isinstance(block, TextBlock))
        return Answer(
            text=text.strip(),
            provider=self.name,
            model=message.model or self._model,
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
        )

    async def aclose(self) -> None:
        await self._client.close()
