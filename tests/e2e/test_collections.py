"""Stored collections through the gateway: ingest, list, query in every mode, filters,
replacement, deletes, and one SQLite file shared by both ML replicas."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from conftest import assert_envelope
from trine.credentials import ApiKey
from trine.stack import Stack

DOCUMENTS = [
    {
        "id": "gateway",
        "text": "The gateway checks API keys and applies rate limits to every request.",
        "metadata": {"team": "platform"},
    },
    {
        "id": "sandbox",
        "text": "The sandbox runs untrusted WebAssembly under fuel and memory limits.",
        "metadata": {"team": "runtime"},
    },
    {
        "id": "bananas",
        "text": "Bananas are yellow fruit rich in potassium, grown in the tropics.",
        "metadata": {"team": "kitchen"},
    },
]


@pytest.fixture
def collection(client: httpx.Client) -> str:
    name = f"kb-{uuid.uuid4().hex[:8]}"
    resp = client.post(f"/v1/collections/{name}/documents", json={"documents": DOCUMENTS})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"collection": name, "documents": 3, "chunks": 3}
    return name


def ask(client: httpx.Client, name: str, **body: object) -> dict:
    resp = client.post("/v1/rag/query", json={"collection": name, **body})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_list_and_get(client: httpx.Client, collection: str) -> None:
    listed = client.get("/v1/collections").json()["collections"]
    assert {"name": collection, "documents": 3, "chunks": 3} in listed
    assert client.get(f"/v1/collections/{collection}").json() == {
        "name": collection,
        "documents": 3,
        "chunks": 3,
    }
    assert_envelope(client.get("/v1/collections/does-not-exist"), 404, "not_found")


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_every_mode_finds_the_document(client: httpx.Client, collection: str, mode: str) -> None:
    body = ask(client, collection, query="Which fruit has potassium?", mode=mode, top_k=2)
    assert body["sources"][0] == "bananas"
    passage = body["passages"][0]
    assert passage["document_id"] == "bananas"
    assert passage["chunk_id"] == "bananas#0"
    assert passage["metadata"] == {"team": "kitchen"}
    assert "potassium" in passage["text"]
    assert isinstance(passage["score"], float)
    assert "[1]" in body["answer"]


def test_filter_and_replace(client: httpx.Client, collection: str) -> None:
    body = ask(client, collection, query="limits", top_k=5, filter={"team": {"in": ["runtime"]}})
    assert body["sources"] == ["sandbox"]
    replacement = {"id": "bananas", "text": "Cherries are small red fruit.", "metadata": {}}
    resp = client.post(f"/v1/collections/{collection}/documents", json={"documents": [replacement]})
    assert resp.json()["documents"] == 1
    body = ask(client, collection, query="potassium", mode="keyword", top_k=5)
    assert "bananas" not in body["sources"]
    assert client.get(f"/v1/collections/{collection}").json()["documents"] == 3


def test_writes_through_one_replica_are_seen_by_all(client: httpx.Client, collection: str) -> None:
    """Both replicas share one SQLite file; each must see every write at once, although
    each keeps its own in-memory index."""
    seen: set[str] = set()
    for i in range(4):
        doc = {"id": f"late-{i}", "text": f"Zanzibar note {i} about cloves and spice."}
        resp = client.post(f"/v1/collections/{collection}/documents", json={"documents": [doc]})
        assert resp.status_code == 200, resp.text
        for _ in range(2):
            body = ask(client, collection, query=f"Zanzibar note {i} cloves", mode="dense", top_k=1)
            assert body["sources"] == [f"late-{i}"], body
            seen.add(body["service_id"])
    assert seen == {"ml-0", "ml-1"}


def test_deletes(client: httpx.Client, collection: str) -> None:
    assert client.delete(f"/v1/collections/{collection}/documents/bananas").status_code == 204
    assert_envelope(
        client.delete(f"/v1/collections/{collection}/documents/bananas"), 404, "not_found"
    )
    assert "bananas" not in ask(client, collection, query="fruit", top_k=5)["sources"]
    assert client.delete(f"/v1/collections/{collection}").status_code == 204
    resp = client.post("/v1/rag/query", json={"collection": collection, "query": "fruit"})
    assert_envelope(resp, 404, "not_found")


def test_invalid_names_and_bodies(client: httpx.Client) -> None:
    assert_envelope(client.get("/v1/collections/Not_Valid"), 400, "invalid_request")
    resp = client.post("/v1/collections/ok-name/documents", json={"documents": []})
    assert_envelope(resp, 400, "invalid_request")
    resp = client.post("/v1/rag/query", json={"collection": "ok-name", "query": "q", "mode": "x"})
    assert_envelope(resp, 400, "invalid_request")


def test_a_rag_only_key_reads_but_cannot_ingest(
    stack: Stack, rag_only_key: ApiKey, collection: str
) -> None:
    headers = {"Authorization": f"Bearer {rag_only_key.key}"}
    with httpx.Client(base_url=stack.gateway_url, headers=headers, timeout=60) as reader:
        assert reader.get(f"/v1/collections/{collection}").status_code == 200
        resp = reader.post(f"/v1/collections/{collection}/documents", json={"documents": DOCUMENTS})
        assert_envelope(resp, 403, "forbidden")


def test_streamed_collection_answer(client: httpx.Client, collection: str) -> None:
    body = {"collection": collection, "query": "What runs WebAssembly?", "stream": True}
    with client.stream("POST", "/v1/rag/query", json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = _events(resp.iter_lines())
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "passage"
    assert "token" in kinds
    assert kinds[-1] == "done"
    done = events[-1][1]
    assert done["sources"][0] == "sandbox"
    assert "".join(d["text"] for k, d in events if k == "token") == done["answer"]


def _events(lines: object) -> list[tuple[str, dict]]:
    events, kind = [], "message"
    for line in lines:  # type: ignore[attr-defined]
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            events.append((kind, json.loads(line[5:])))
    return events
