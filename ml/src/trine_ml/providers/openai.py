"""The OpenAI-compatible provider: the official SDK's Chat Completions API against any
server that speaks it (OpenAI, vLLM, Ollama, llama.cpp server), one client per lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import openai
from openai.types.chat import (
    ChatCompletionMessageParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionUserMessageParam,
)

from trine_ml.errors import UpstreamError
from trine_ml.providers.anthropic import SYSTEM_PROMPT, build_prompt
from trine_ml.providers.base import Answer, Passage
from trine_ml.providers.sdk_errors import mapped_sdk_errors

# Local servers (Ollama, llama.cpp) ignore the key, but the SDK insists on one.
_NO_KEY = "unused"


class OpenAIProvider:
    """Calls ``chat.completions.create``; the SDK retries 408/409/429/5xx and connection
    errors ``max_retries`` times with backoff, then failures map to upstream errors whose
    messages never carry the provider's own text or the key."""

    def __init__(self, client: openai.AsyncOpenAI, *, model: str, max_tokens: int) -> None:
        self._client = client
        self._model = model
        self._max_tokens = max_tokens

    @classmethod
    def create(
        cls,
        *,
        api_key: str | None,
        base_url: str | None,
        model: str,
        max_tokens: int,
        timeout_s: float,
        max_retries: int,
    ) -> OpenAIProvider:
        client = openai.AsyncOpenAI(
            api_key=api_key or _NO_KEY,
            base_url=base_url,
            timeout=timeout_s,
            max_retries=max_retries,
        )
        return cls(client, model=model, max_tokens=max_tokens)

    @property
    def name(self) -> str:
        return "openai"

    @property
    def model(self) -> str:
        return self._model

    def _messages(
        self, query: str, passages: Sequence[Passage]
    ) -> list[ChatCompletionMessageParam]:
        return [
            ChatCompletionSystemMessageParam(role="system", content=SYSTEM_PROMPT),
            ChatCompletionUserMessageParam(role="user", content=build_prompt(query, passages)),
        ]

    async def answer(self, query: str, passages: Sequence[Passage]) -> Answer:
        with mapped_sdk_errors(openai):
            completion = await self._client.chat.completions.create(
                model=self._model,
                max_tokens=self._max_tokens,
                messages=self._messages(query, passages),
            )
        if not completion.choices:
            raise UpstreamError("the LLM provider sent an unusable answer")
        usage = completion.usage
        return Answer(
            text=(completion.choices[0].message.content or "").strip(),
            provider=self.name,
            model=completion.model or self._model,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
        )

    async def stream(self, query: str, passages: Sequence[Passage]) -> AsyncIterator[str | Answer]:
        parts: list[str] = []
        model = self._model
        input_tokens = output_tokens = 0
        with mapped_sdk_errors(openai):
            chunks = await self._client.chat.completions.create(
                model=self._model,
                max_tokens=self._max_tokens,
                messages=self._messages(query, passages),
                stream=True,
                stream_options={"include_usage": True},
            )
            async with chunks:
                async for chunk in chunks:
                    model = chunk.model or model
                    if chunk.usage is not None:
                        input_tokens = chunk.usage.prompt_tokens
                        output_tokens = chunk.usage.completion_tokens
                    for choice in chunk.choices:
                        if choice.delta.content:
                            parts.append(choice.delta.content)
                            yield choice.delta.content
        yield Answer("".join(parts).strip(), self.name, model, input_tokens, output_tokens)

    async def aclose(self) -> None:
        await self._client.close()
