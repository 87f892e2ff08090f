"""The internal services refuse anyone who lacks the credential the gateway adds."""

from __future__ import annotations

import httpx
import pytest

from trine.stack import Stack

RAG = {"query": "what?", "documents": ["an answer"]}
RUN = {"language": "wat", "code": '(module (func (export "run")))'}


def _targets(stack: Stack) -> list[tuple[str, dict[str, object]]]:
    return [
        (f"{stack.ml_urls[0]}/rag/query", RAG),
        (f"{stack.ml_urls[1]}/rag/query", RAG),
        (f"{stack.sandbox_url}/run", RUN),
    ]


@pytest.mark.parametrize("token", [None, "wrong-token-of-enough-length"], ids=["none", "wrong"])
def test_direct_calls_without_the_credential_are_refused(stack: Stack, token: str | None) -> None:
    headers = {"X-Trine-Internal-Token": token} if token else {}
    for url, body in _targets(stack):
        resp = httpx.post(url, json=body, headers=headers)
        assert resp.status_code == 401, (url, resp.text)
        assert resp.json()["error"]["type"] == "unauthorized"


def test_direct_calls_with_the_credential_work(stack: Stack) -> None:
    # The same calls succeed with the credential, so the refusal above is about the credential.
    headers = {"X-Trine-Internal-Token": stack.internal_token}
    for url, body in _targets(stack):
        resp = httpx.post(url, json=body, headers=headers)
        assert resp.status_code == 200, (url, resp.text)


def _listen_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on `port`, read from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                addr, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(addr)
    return found


def test_internal_services_listen_on_loopback_only(stack: Stack) -> None:
    for url in [*stack.ml_urls, stack.sandbox_url]:
        port = int(url.rsplit(":", 1)[1])
        # 0100007F is 127.0.0.1 as the kernel prints it (little-endian hex).
        assert _listen_addresses(port) == {"0100007F"}, url
