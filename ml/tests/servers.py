"""Test helpers: run an ASGI app under a real uvicorn server in a background thread, and
fakes of the Anthropic Messages API and the OpenAI Chat Completions API that speak their
real wire formats, streaming (server-sent events) included."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
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
        if self.mode == "stall" and not body.get("stream"):
            await self._hold(request)
            return Response(status_code=499)
        if body.get("stream"):
            return StreamingResponse(self._events(request, body), media_type="text/event-stream")
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

    async def _hold(self, request: Request) -> None:
        """Holds the request open until the caller closes its connection (bounded)."""
        self.stalled.set()
        try:
            async with asyncio.timeout(self.stall_limit_s):
                while (await request.receive())["type"] != "http.disconnect":
                    pass
            self.client_went_away.set()
        except TimeoutError:
            pass

    async def _events(self, request: Request, body: dict[str, Any]) -> AsyncIterator[bytes]:
        yield _sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake_0002",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": body["model"],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": self.input_tokens, "output_tokens": 1},
                },
            },
        )
        yield _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        yield _sse("ping", {"type": "ping"})
        words = self.answer_text.split(" ")
        for i, word in enumerate(words):
            text = word if i == 0 else " " + word
            yield _sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
            )
            if self.mode == "stall" and i == 0:
                await self._hold(request)
                return
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        yield _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": self.output_tokens},
            },
        )
        yield _sse("message_stop", {"type": "message_stop"})


def _sse(event: str | None, data: object) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


OpenAIMode = Literal["ok", "rate_limited", "server_error", "stall", "flaky"]


@dataclass
class FakeOpenAI:
    """A Chat Completions stand-in (``POST /v1/chat/completions``), JSON or SSE chunks.
    ``flaky`` fails the first ``failures`` calls with 503, then answers."""

    mode: OpenAIMode = "ok"
    answer_text: str = "The gateway checks keys [1] and limits rates [1]."
    prompt_tokens: int = 123
    completion_tokens: int = 11
    failures: int = 1
    stall_limit_s: float = 30.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    stalled: threading.Event = field(default_factory=threading.Event)
    client_went_away: threading.Event = field(default_factory=threading.Event)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        if self.mode == "rate_limited":
            return _openai_error(429, "rate_limit_exceeded")
        if self.mode == "server_error" or (
            self.mode == "flaky" and len(self.requests) <= self.failures
        ):
            return _openai_error(503, "server_error")
        if self.mode == "stall":
            self.stalled.set()
            try:
                async with asyncio.timeout(self.stall_limit_s):
                    while (await request.receive())["type"] != "http.disconnect":
                        pass
                self.client_went_away.set()
            except TimeoutError:
                pass
            return Response(status_code=499)
        if body.get("stream"):
            return StreamingResponse(self._chunks(body), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": "chatcmpl-fake-1",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.answer_text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": self._usage(),
            }
        )

    def _usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    async def _chunks(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            return _sse(
                None,
                {
                    "id": "chatcmpl-fake-2",
                    "object": "chat.completion.chunk",
                    "created": 1_700_000_000,
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                },
            )

        yield chunk({"role": "assistant", "content": ""}, None)
        for i, word in enumerate(self.answer_text.split(" ")):
            yield chunk({"content": word if i == 0 else " " + word}, None)
        yield chunk({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            yield _sse(
                None,
                {
                    "id": "chatcmpl-fake-2",
                    "object": "chat.completion.chunk",
                    "created": 1_700_000_000,
                    "model": body["model"],
                    "choices": [],
                    "usage": self._usage(),
                },
            )
        yield _sse(None, "[DONE]")


def _openai_error(status: int, code: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": PROVIDER_SECRET, "type": code, "param": None, "code": code}},
        status_code=status,
        headers={"retry-after-ms": "1"},
    )


def _error(status: int, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"type": "error", "error": {"type": kind, "message": PROVIDER_SECRET}},
        status_code=status,
        headers=headers,
    )
