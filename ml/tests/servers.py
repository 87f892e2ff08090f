"""Test helpers: run an ASGI app under a real uvicorn server in a background thread, and a
fake Anthropic Messages API server."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp


@contextmanager
def serve_in_thread(app: ASGIApp, *, startup_timeout_s: float = 60.0) -> Iterator[str]:
    """Serves ``app`` on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="auto")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


Mode = Literal["ok", "rate_limited", "server_error", "stall"]

PROVIDER_SECRET = "provider-internal-detail-xyz"


@dataclass
class FakeAnthropic:
    """A Messages API stand-in. ``mode`` picks the behaviour of the next calls; the events
    let tests see what happened on the server side."""

    mode: Mode = "ok"
    answer_text: str = "The gateway handles authentication and rate limits [1]."
    input_tokens: int = 321
    output_tokens: int = 17
    stall_limit_s: float = 30.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    stalled: threading.Event = field(default_factory=threading.Event)
    client_went_away: threading.Event = field(default_factory=threading.Event)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])

    async def _messages(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        if self.mode == "rate_limited":
            return _error(429, "rate_limit_error", headers={"retry-after": "0"})
        if self.mode == "server_error":
            return _error(500, "api_error")
        if self.mode == "stall":
            self.stalled.set()
            # Hold the request open until the caller closes its connection (bounded).
            try:
                async with asyncio.timeout(self.stall_limit_s):
                    while (await request.receive())["type"] != "http.disconnect":
                        pass
                self.client_went_away.set()
            except TimeoutError:
                pass
            return Response(status_code=499)
        return JSONResponse(
            {
                "id": "msg_fake_0001",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": self.answer_text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": self.input_tokens,
                    "output_tokens": self.output_tokens,
                },
            },
            headers={"request-id": "req_fake_0001"},
        )


def _error(status: int, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"type": "error", "error": {"type": kind, "message": PROVIDER_SECRET}},
        status_code=status,
        headers=headers,
    )
