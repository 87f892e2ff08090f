"""Pure ASGI middleware: request ID, one log line per request, and cancellation of the
request's work when the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trine_ml.errors import envelope
from trine_ml.logs import request_id_var, trace_id_var

logger = logging.getLogger("trine_ml.request")

REQUEST_ID_HEADER = b"x-request-id"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class RequestContextMiddleware:
    """Wraps every HTTP request.

    Starlette keeps running a handler after its client disconnects, so an abandoned request
    would keep the model busy and the LLM call open. Here the app runs as a task while this
    middleware alone reads the client's messages; an ``http.disconnect`` before the response
    is complete cancels the task, which cancels whatever it awaits (the LLM call included),
    and writes one ``request_cancelled`` line.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        incoming = _header(scope, REQUEST_ID_HEADER)
        request_id = incoming if incoming and _SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        traceparent = _TRACEPARENT.match(_header(scope, b"traceparent") or "")
        request_token = request_id_var.set(request_id)
        trace_token = trace_id_var.set(traceparent.group(1) if traceparent else None)
        try:
            await self._handle(scope, receive, send, request_id)
        finally:
            trace_id_var.reset(trace_token)
            request_id_var.reset(request_token)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        started = time.perf_counter()
        status = 0
        response_started = False
        response_complete = False
        client_gone = False
        inbox: asyncio.Queue[Message] = asyncio.Queue()

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started, response_complete
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER
                ]
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                response_complete = True
            await send(message)

        async def receive_from_inbox() -> Message:
            return await inbox.get()

        async def run_app() -> None:
            await self.app(scope, receive_from_inbox, send_with_id)

        app_task = asyncio.create_task(run_app())

        async def watch_client() -> None:
            nonlocal client_gone
            while True:
                message = await receive()
                await inbox.put(message)
                if message["type"] == "http.disconnect":
                    # The server also reports a disconnect once the response is complete.
                    if not response_complete and not app_task.done():
                        client_gone = True
                        app_task.cancel()
                    return

        watcher = asyncio.create_task(watch_client())
        try:
            await app_task
        except asyncio.CancelledError:
            if not client_gone:
                raise  # the server itself is cancelling us: propagate
            logger.info(
                "client disconnected; request work cancelled",
                extra={
                    "event": "request_cancelled",
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            return
        except Exception:
            logger.exception("unhandled error", extra={"event": "request_error"})
            if response_started:
                raise
            status = 500
            body = json.dumps(envelope("internal_error", "internal error")).encode()
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if app_task.done() and not app_task.cancelled():
                app_task.exception()  # mark retrieved
        logger.info(
            "request handled",
            extra={
                "event": "request",
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
