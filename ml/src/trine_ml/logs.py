"""JSON-lines logging on stderr, with the request ID on every line about a request."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

from pydantic import ValidationError

#: The ID of the request being handled by the current task, if any.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
#: The job being run by the current task, in the worker.
job_id_var: ContextVar[str | None] = ContextVar("job_id", default=None)
#: The W3C trace ID of the request being handled, if the caller sent a traceparent.
trace_id_var: ContextVar[str | None] = ContextVar("trace_id", default=None)

# Attributes every LogRecord has; anything else was passed through ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        job_id = getattr(record, "job_id", None) or job_id_var.get()
        if job_id is not None:
            entry["job_id"] = job_id
        trace_id = trace_id_var.get()
        if trace_id is not None:
            entry["trace_id"] = trace_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    """Sends every logger (uvicorn's included) to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # Access lines are written by our own middleware, with the request ID.
    logging.getLogger("uvicorn.access").disabled = True
    # The SDK's HTTP stack logs request details at INFO; keep it to warnings.
    for name in ("httpx", "httpx2", "httpcore", "httpcore2", "anthropic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def log_invalid_settings(logger: logging.Logger, exc: ValidationError) -> None:
    """One ``invalid_settings`` line naming every bad setting, without its value."""
    problems = [
        {"field": ".".join(str(p) for p in err["loc"]) or "settings", "problem": err["msg"]}
        for err in exc.errors(include_input=False, include_url=False)
    ]
    logger.error("invalid settings", extra={"event": "invalid_settings", "errors": problems})
