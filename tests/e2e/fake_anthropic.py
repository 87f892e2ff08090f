"""A local server that speaks the Anthropic Messages API, for driving the real SDK in tests.

It answers `POST /v1/messages` with a well-formed `message` object. A request whose text contains
STALL_MARKER is never answered: the server holds it until the caller closes the connection and
records that, so a test can prove that cancellation reached the LLM call.
"""

from __future__ import annotations

import asyncio
import json
import threading

STALL_MARKER = "__stall__"
ANSWER = "The sandbox runs untrusted code [1]."


class FakeAnthropic:
    """Runs the fake on its own event loop in a background thread."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[dict[str, object]] = []
        self.stalled = threading.Event()
        self.caller_went_away = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-anthropic", daemon=True)

    def start(self) -> FakeAnthropic:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                body = json.loads(await reader.readexactly(length)) if length else {}
                self.requests.append(body)
                if STALL_MARKER in json.dumps(body):
                    self.stalled.set()
                    while await reader.read(65536):
                        pass
                    self.caller_went_away.set()
                    return
                payload = json.dumps(_message(body)).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


def _message(request: dict[str, object]) -> dict[str, object]:
    return {
        "id": "msg_fake_1",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "unknown"),
        "content": [{"type": "text", "text": ANSWER}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 42, "output_tokens": 7},
    }
