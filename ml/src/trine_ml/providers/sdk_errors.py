"""Maps the official LLM SDKs' failures to upstream errors.

The `anthropic` and `openai` SDKs are generated from the same template and share the names of
their exception classes, so one mapping serves both.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from types import ModuleType

from trine_ml.errors import UpstreamError, UpstreamTimeout, provider_status_message

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def mapped_sdk_errors(sdk: ModuleType) -> Iterator[None]:
    """Turns `sdk`'s failures into upstream errors (the SDK has already retried the retryable
    ones max_retries times). Messages never carry the provider's own text."""
    try:
        yield
    except sdk.APITimeoutError as exc:
        logger.warning("llm call timed out", extra={"event": "llm_timeout"})
        raise UpstreamTimeout("the LLM provider did not answer in time") from exc
    except sdk.APIConnectionError as exc:
        logger.warning("llm unreachable", extra={"event": "llm_error", "kind": "connection"})
        raise UpstreamError("could not reach the LLM provider") from exc
    except sdk.APIStatusError as exc:
        logger.warning(
            "llm call failed",
            extra={"event": "llm_error", "status": exc.status_code, "kind": type(exc).__name__},
        )
        raise UpstreamError(provider_status_message(exc.status_code)) from exc
    except sdk.APIError as exc:
        logger.warning("llm answer unusable", extra={"event": "llm_error", "kind": "response"})
        raise UpstreamError("the LLM provider sent an unusable answer") from exc
