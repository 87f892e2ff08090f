"""The Anthropic provider end to end, and cancellation from the client down to the LLM call."""

from __future__ import annotations

import json
import socket
import uuid
from urllib.parse import urlsplit

import httpx

from conftest import schema_validator, wait_for
from fake_anthropic import ANSWER, STALL_MARKER, FakeAnthropic
from trine.credentials import ApiKey
from trine.stack import Stack

DOCUMENTS = [
    "The sandbox runs untrusted code in WebAssembly.",
    "The gateway is the only public entry point.",
]


def test_answer_comes_from_the_anthropic_sdk(
    llm_stack: Stack, dev_key: ApiKey, fake_anthropic: FakeAnthropic
) -> None:
    resp = httpx.post(
        f"{llm_stack.gateway_url}/v1/rag/query",
        json={"query": "What runs untrusted code?", "documents": DOCUMENTS},
        headers={"Authorization": f"Bearer {dev_key.key}"},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    schema_validator("RagAnswer").validate(body)
    assert body["provider"] == "anthropic"
    assert body["model"] == "claude-sonnet-4-6"
    assert body["answer"] == ANSWER
    assert body["usage"] == {"input_tokens": 42, "output_tokens": 7}
    assert body["sources"][0] == 0
    # The passages went to the model, numbered, so its [n] citations can map to sources.
    sent = json.dumps(fake_anthropic.requests[-1])
    assert DOCUMENTS[0] in sent


def test_client_disconnect_cancels_the_llm_call(
    llm_stack: Stack, dev_key: ApiKey, fake_anthropic: FakeAnthropic
) -> None:
    rid = f"e2e-cancel-{uuid.uuid4().hex[:12]}"
    body = json.dumps(
        {"query": f"Please {STALL_MARKER} for a while", "documents": DOCUMENTS}
    ).encode()
    gateway = urlsplit(llm_stack.gateway_url)
    request = (
        f"POST /v1/rag/query HTTP/1.1\r\nHost: {gateway.netloc}\r\n"
        f"Authorization: Bearer {dev_key.key}\r\nContent-Type: application/json\r\n"
        f"X-Request-ID: {rid}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    sock = socket.create_connection((gateway.hostname, gateway.port))
    try:
        sock.sendall(request)
        # Only once the LLM has the request do we walk away.
        assert fake_anthropic.stalled.wait(30), "the LLM call never started"
    finally:
        sock.close()
    assert fake_anthropic.caller_went_away.wait(10), "the LLM call was not cancelled"
    assert wait_for(lambda: _logged_cancel(llm_stack.log_text("ml-0"), rid))


def _logged_cancel(log: str, rid: str) -> bool:
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "request_cancelled" and record.get("request_id") == rid:
            return True
    return False
