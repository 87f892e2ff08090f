"""Streamed answers over inline documents through the gateway."""

from __future__ import annotations

import json

import httpx

DOCUMENTS = [
    "Paris is the capital of France. It is known for the Eiffel Tower.",
    "Bananas are yellow fruit rich in potassium.",
]


def test_inline_stream_ends_with_the_full_answer(client: httpx.Client) -> None:
    body = {"query": "What is the capital of France?", "documents": DOCUMENTS, "top_k": 2}
    with client.stream("POST", "/v1/rag/query", json={**body, "stream": True}) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        events, kind = [], ""
        for line in resp.iter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                events.append((kind, json.loads(line[5:])))
    kinds = [k for k, _ in events]
    assert kinds[:2] == ["passage", "passage"]
    assert kinds[-1] == "done"
    assert "token" in kinds
    done = events[-1][1]
    assert done["sources"][0] == 0
    assert "Paris" in done["answer"]
    assert "".join(d["text"] for k, d in events if k == "token") == done["answer"]
