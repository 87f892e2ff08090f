"""Domain errors and the single place that turns them into the error envelope.

Every non-2xx response has the body ``{"error": {"type", "message", "request_id"}}``.
The message is meant for the caller; anything internal goes to the log only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from trine_ml.logs import request_id_var

logger = logging.getLogger(__name__)


class TrineError(Exception):
    """An error with a status and an envelope type; ``message`` is safe to show the caller."""

    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


class InvalidRequest(TrineError):
    status_code = 400
    error_type = "invalid_request"


class Unauthorized(TrineError):
    status_code = 401
    error_type = "unauthorized"


class NotFound(TrineError):
    status_code = 404
    error_type = "not_found"


class MethodNotAllowed(TrineError):
    status_code = 405
    error_type = "method_not_allowed"


class PayloadTooLarge(TrineError):
    status_code = 413
    error_type = "payload_too_large"


class UnsupportedMediaType(TrineError):
    status_code = 415
    error_type = "unsupported_media_type"


class Unavailable(TrineError):
    status_code = 503
    error_type = "unavailable"


class UpstreamError(TrineError):
    """The LLM provider failed or refused the call."""

    status_code = 502
    error_type = "upstream_error"


class UpstreamTimeout(TrineError):
    """The LLM provider did not answer in time."""

    status_code = 504
    error_type = "upstream_timeout"


class ModelIntegrityError(RuntimeError):
    """The embedding model file on disk is not the one that was pinned."""


def provider_status_message(status: int) -> str:
    """A caller-facing message for an LLM provider's HTTP status (never the provider's text)."""
    if status == 429:
        return "the LLM provider is rate limiting requests (429)"
    if status >= 500:
        return f"the LLM provider failed ({status})"
    if status in (401, 403):
        return f"the LLM provider refused this service's credentials ({status})"
    return f"the LLM provider rejected the request ({status})"


_BY_STATUS: dict[int, type[TrineError]] = {
    cls.status_code: cls
    for cls in (
        InvalidRequest,
        Unauthorized,
        NotFound,
        MethodNotAllowed,
        PayloadTooLarge,
        UnsupportedMediaType,
        Unavailable,
    )
}


def envelope(error_type: str, message: str) -> dict[str, Any]:
    """The error body, stamped with the current request ID."""
    return {"error": {"type": error_type, "message": message, "request_id": request_id_var.get()}}


def error_response(exc: TrineError) -> JSONResponse:
    """Renders a domain error as the envelope: the one mapping from errors to responses."""
    return JSONResponse(
        envelope(exc.error_type, exc.message), status_code=exc.status_code, headers=exc.headers
    )


def _from_http_exception(exc: StarletteHTTPException) -> TrineError:
    cls = _BY_STATUS.get(exc.status_code, TrineError)
    defaults = {
        404: "no such route",
        405: "method not allowed on this route",
    }
    message = defaults.get(exc.status_code) or (
        exc.detail if isinstance(exc.detail, str) else "request failed"
    )
    headers = dict(exc.headers) if exc.headers else None
    return cls(message, headers=headers)


def invalid_request_from(errors: Sequence[Any]) -> InvalidRequest:
    """Summarises pydantic/FastAPI validation errors as one caller-facing message (the
    first problem, with its field path); the input values are never echoed."""
    if not errors:
        return InvalidRequest("invalid request")
    first = errors[0]
    kind = first.get("type")
    loc = tuple(part for part in first.get("loc", ()) if part != "body")
    if kind == "json_invalid":
        return InvalidRequest("request body is not valid JSON")
    if not loc and kind in ("model_type", "model_attributes_type", "dict_type"):
        return InvalidRequest("request body must be a JSON object")
    location = ".".join(str(part) for part in loc)
    message = "field required" if kind == "missing" else str(first.get("msg", "invalid value"))
    return InvalidRequest(f"{location}: {message}" if location else message)


def install_error_handlers(app: FastAPI) -> None:
    """Routes domain errors, FastAPI's validation errors and Starlette's HTTP errors
    through :func:`error_response`."""

    async def on_domain_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TrineError)
        if exc.status_code >= 500:
            logger.warning(
                "request failed",
                extra={"event": "request_failed", "error_type": exc.error_type},
            )
        return error_response(exc)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(invalid_request_from(exc.errors()))

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(_from_http_exception(exc))

    app.add_exception_handler(TrineError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
