"""Server-sent events for streamed answers: ``passage`` frames, ``token`` frames, then one
``done`` frame with the complete JSON result (or one ``error`` frame with the envelope)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel

from trine_ml.errors import TrineError, envelope
from trine_ml.providers.base import Answer

logger = logging.getLogger(__name__)


def frame(event: str, data: object) -> bytes:
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    return f"event: {event}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


async def answer_events(
    passages: list[Any],
    first: str | Answer,
    rest: AsyncIterator[str | Answer],
    done: Callable[[Answer], BaseModel],
) -> AsyncIterator[bytes]:
    """The event stream of one answer. ``first`` was taken from the provider before the
    response started, so a provider that fails at once still gets a proper error status;
    a failure after that can only be reported in-band."""
    for passage in passages:
        yield frame("passage", passage)
    item: str | Answer = first
    try:
        while not isinstance(item, Answer):
            yield frame("token", {"text": item})
            item = await anext(rest)
    except TrineError as exc:
        logger.warning(
            "stream failed", extra={"event": "stream_failed", "error_type": exc.error_type}
        )
        yield frame("error", envelope(exc.error_type, exc.message))
        return
    except StopAsyncIteration:
        yield frame("error", envelope("upstream_error", "the LLM provider ended without an answer"))
        return
    yield frame("done", done(item))
