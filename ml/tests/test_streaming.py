"""``"stream": true``: passages, then tokens, then one done frame with the full result."""

from __future__ import annotations

from fastapi.testclient import TestClient

from constants import AUTH
from sse import parse_events
from test_collections_api import HANDBOOK

DOCS = [
    "Paris is the capital of France. It has many museums.",
    "Bananas are yellow.",
    "The Eiffel Tower is 330 metres tall.",
]


def stream(client: TestClient, body: dict[str, object]) -> list[tuple[str, object]]:
    with client.stream("POST", "/rag/query", headers=AUTH, json={**body, "stream": True}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        return parse_events(resp.iter_lines())


def test_inline_stream_matches_the_plain_answer(client: TestClient) -> None:
    body = {"query": "How tall is the Eiffel Tower?", "documents": DOCS, "top_k": 2}
    events = stream(client, body)
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["passage", "passage"]
    assert kinds[-1] == "done"
    assert set(kinds[2:-1]) == {"token"}
    assert len(kinds) > 4
    plain = client.post("/rag/query", headers=AUTH, json=body).json()
    done = events[-1][1]
    assert done == plain
    assert "".join(data["text"] for kind, data in events if kind == "token") == plain["answer"]
    assert [data for kind, data in events if kind == "passage"] == plain["passages"]


def test_collection_stream(client: TestClient) -> None:
    client.post("/collections/kb/documents", headers=AUTH, json={"documents": HANDBOOK})
    events = stream(client, {"collection": "kb", "query": "Which fruit is yellow?", "top_k": 2})
    passages = [data for kind, data in events if kind == "passage"]
    assert passages[0]["document_id"] == "bananas"
    assert events[-1][0] == "done"
    assert events[-1][1]["sources"][0] == "bananas"


def test_stream_errors_before_the_first_byte_are_plain_errors(client: TestClient) -> None:
    response = client.post(
        "/rag/query", headers=AUTH, json={"collection": "missing", "query": "q", "stream": True}
    )
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
