"""A webhook endpoint for the jobs tests: it checks each delivery's Standard Webhooks signature
on its own (not with the gateway's code) and keeps what arrived."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Delivery:
    """One webhook request as received."""

    webhook_id: str
    timestamp: int
    body: dict[str, Any]
    signature_valid: bool


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,...` signature Standard Webhooks defines for a `whsec_` secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


class WebhookReceiver:
    """Listens on 127.0.0.1:`port`; answers 503 to the first `fail_first` deliveries."""

    def __init__(self, secret: str, port: int = 0, fail_first: int = 0) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.deliveries: list[Delivery] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def for_job(self, job_id: str) -> list[Delivery]:
        """The deliveries received about job `job_id`."""
        with self._lock:
            return [d for d in self.deliveries if d.body["data"]["id"] == job_id]

    def _record(self, headers: Any, raw: bytes) -> bool:
        """Keep one delivery; False if this one is to be refused."""
        webhook_id = headers.get("webhook-id", "")
        timestamp = int(headers.get("webhook-timestamp", "0"))
        expected = sign(self.secret, webhook_id, timestamp, raw)
        given = headers.get("webhook-signature", "").split(" ")
        valid = any(hmac.compare_digest(expected, s) for s in given)
        with self._lock:
            if self.refused < self.fail_first:
                self.refused += 1
                return False
            self.deliveries.append(Delivery(webhook_id, timestamp, json.loads(raw), valid))
            return True

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                accepted = receiver._record(self.headers, raw)
                self.send_response(204 if accepted else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def age_seconds(delivery: Delivery) -> float:
    """How old the delivery's signed timestamp is."""
    return time.time() - delivery.timestamp
