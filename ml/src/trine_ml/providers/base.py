"""The interface every LLM provider implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved passage as shown to the provider. Citations ``[n]`` refer to the
    1-based position of the passage in the list handed to the provider."""

    index: int
    score: float
    text: str


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    provider: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0


class LLMProvider(Protocol):
    """Answers ``query`` from ``passages`` (best first), citing them as ``[n]``.

    Implementations raise :class:`trine_ml.errors.UpstreamError` or
    :class:`trine_ml.errors.UpstreamTimeout` for provider failures, and must be cancellable:
    cancelling the awaiting task abandons any call in flight.
    """

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    async def answer(self, query: str, passages: Sequence[Passage]) -> Answer: ...

    def stream(self, query: str, passages: Sequence[Passage]) -> AsyncIterator[str | Answer]:
        """Yields the answer's text in pieces as it is produced, then the complete
        :class:`Answer` as the last item. Closing the iterator early abandons the call."""
        ...

    async def aclose(self) -> None: ...
