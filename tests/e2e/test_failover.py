"""A replica that dies is skipped; requests keep succeeding on the others."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import make_config, wait_for
from trine.credentials import ApiKey
from trine.stack import Stack

DOCUMENTS = ["Cats purr.", "Dogs bark.", "Cows moo."]


@pytest.fixture
def small_stack(tmp_path: Path, dev_key: ApiKey) -> Iterator[Stack]:
    with Stack(make_config(tmp_path, [dev_key]), console=None) as s:
        yield s


def test_dead_replica_is_skipped(small_stack: Stack, dev_key: ApiKey) -> None:
    small_stack.service("ml-1").stop()
    headers = {"Authorization": f"Bearer {dev_key.key}"}
    with httpx.Client(base_url=small_stack.gateway_url, headers=headers, timeout=60) as client:
        for _ in range(6):
            resp = client.post("/v1/rag/query", json={"query": "bark", "documents": DOCUMENTS})
            assert resp.status_code == 200, resp.text
            assert resp.json()["service_id"] == "ml-0"

        def ml1_marked_down() -> bool:
            upstreams = client.get("/readyz").json()["upstreams"]
            return any(u["name"] == "ml-1" and not u["healthy"] for u in upstreams)

        assert wait_for(ml1_marked_down)
        assert client.get("/readyz").status_code == 200


def test_no_replica_left_is_503(small_stack: Stack, dev_key: ApiKey) -> None:
    small_stack.service("ml-0").stop()
    small_stack.service("ml-1").stop()
    headers = {"Authorization": f"Bearer {dev_key.key}"}
    resp = httpx.post(
        f"{small_stack.gateway_url}/v1/rag/query",
        json={"query": "bark", "documents": DOCUMENTS},
        headers=headers,
        timeout=60,
    )
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["type"] == "unavailable"
    assert "Retry-After" in resp.headers
    assert wait_for(lambda: httpx.get(f"{small_stack.gateway_url}/readyz").status_code == 503)
