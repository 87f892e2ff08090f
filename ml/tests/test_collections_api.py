"""Collections through the HTTP API: ingest, list, get, delete, and queries in every mode."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from constants import AUTH
from test_api import assert_envelope
from trine_ml.app import create_app
from trine_ml.embedding import OpenVinoEmbedder
from trine_ml.settings import Settings
from trine_ml.store.sqlite import SQLiteVectorStore

HANDBOOK = [
    {
        "id": "gateway",
        "text": "The gateway checks API keys and applies rate limits. It routes requests.",
        "metadata": {"team": "platform", "lang": "en"},
    },
    {
        "id": "sandbox",
        "text": "The sandbox runs untrusted WebAssembly under fuel and memory limits.",
        "metadata": {"team": "runtime", "lang": "en"},
    },
    {
        "id": "bananas",
        "text": "Bananas are yellow fruit rich in potassium. They grow in the tropics.",
        "metadata": {"team": "kitchen", "lang": "en"},
    },
    {
        "id": "paris",
        "text": "Paris est la capitale de la France.",
        "metadata": {"team": "travel", "lang": "fr"},
    },
]


@pytest.fixture
def handbook(client: TestClient) -> TestClient:
    response = client.post(
        "/collections/handbook/documents", headers=AUTH, json={"documents": HANDBOOK}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"collection": "handbook", "documents": 4, "chunks": 4}
    return client


def query(client: TestClient, **body: object) -> dict:
    response = client.post("/rag/query", headers=AUTH, json={"collection": "handbook", **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_list_and_get(handbook: TestClient) -> None:
    assert handbook.get("/collections", headers=AUTH).json() == {
        "collections": [{"name": "handbook", "documents": 4, "chunks": 4}]
    }
    assert handbook.get("/collections/handbook", headers=AUTH).json() == {
        "name": "handbook",
        "documents": 4,
        "chunks": 4,
    }
    assert_envelope(handbook.get("/collections/nope", headers=AUTH), 404, "not_found")


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_query_modes_find_the_right_document(handbook: TestClient, mode: str) -> None:
    body = query(handbook, query="Which fruit has potassium?", mode=mode, top_k=2)
    assert body["sources"][0] == "bananas"
    top = body["passages"][0]
    assert top["document_id"] == "bananas"
    assert top["chunk_id"] == "bananas#0"
    assert top["metadata"] == {"team": "kitchen", "lang": "en"}
    assert "potassium" in top["text"]
    assert [p["score"] for p in body["passages"]] == sorted(
        (p["score"] for p in body["passages"]), reverse=True
    )
    assert "[1]" in body["answer"]
    assert body["provider"] == "extractive"


def test_hybrid_is_the_default_and_fuses_scores(handbook: TestClient) -> None:
    body = query(handbook, query="untrusted WebAssembly limits", top_k=3)
    assert body["sources"][0] == "sandbox"
    # Reciprocal rank fusion: at most 2 / (60 + 1) for a chunk first in both rankings.
    assert 0 < body["passages"][0]["score"] <= 2 / 61 + 1e-9


def test_filters(handbook: TestClient) -> None:
    body = query(handbook, query="limits", top_k=5, filter={"team": "runtime"})
    assert body["sources"] == ["sandbox"]
    body = query(handbook, query="anything at all", top_k=5, filter={"lang": {"in": ["fr"]}})
    assert body["sources"] == ["paris"]
    body = query(handbook, query="limits", top_k=5, filter={"team": "nobody"})
    assert body["sources"] == []
    assert body["passages"] == []


def test_reposting_an_id_replaces_the_document(handbook: TestClient) -> None:
    replacement = {"id": "bananas", "text": "Cherries are red and sour.", "metadata": {"v": 2}}
    response = handbook.post(
        "/collections/handbook/documents", headers=AUTH, json={"documents": [replacement]}
    )
    assert response.json() == {"collection": "handbook", "documents": 1, "chunks": 1}
    assert handbook.get("/collections/handbook", headers=AUTH).json()["documents"] == 4
    body = query(handbook, query="potassium", mode="keyword")
    assert "bananas" not in body["sources"]
    body = query(handbook, query="red cherries", top_k=1)
    assert body["passages"][0]["metadata"] == {"v": 2}


def test_documents_without_id_get_one(client: TestClient) -> None:
    response = client.post(
        "/collections/anon/documents", headers=AUTH, json={"documents": [{"text": "Hello there."}]}
    )
    assert response.status_code == 200
    body = client.post(
        "/rag/query", headers=AUTH, json={"collection": "anon", "query": "hello"}
    ).json()
    assert len(body["sources"][0]) >= 16


def test_long_document_is_chunked(client: TestClient) -> None:
    text = " ".join(f"Paragraph {i} explains configuration option number {i}." for i in range(300))
    response = client.post(
        "/collections/long/documents",
        headers=AUTH,
        json={"documents": [{"id": "manual", "text": text}]},
    )
    assert response.status_code == 200
    assert response.json()["chunks"] > 10
    body = client.post(
        "/rag/query",
        headers=AUTH,
        json={"collection": "long", "query": "option number 250", "mode": "keyword", "top_k": 3},
    ).json()
    assert any("option number 250." in p["text"] for p in body["passages"])
    assert {p["chunk_id"].split("#")[0] for p in body["passages"]} == {"manual"}


def test_deletes(handbook: TestClient) -> None:
    assert (
        handbook.delete("/collections/handbook/documents/bananas", headers=AUTH).status_code == 204
    )
    assert_envelope(
        handbook.delete("/collections/handbook/documents/bananas", headers=AUTH), 404, "not_found"
    )
    assert handbook.get("/collections/handbook", headers=AUTH).json()["documents"] == 3
    assert "bananas" not in query(handbook, query="potassium fruit", top_k=5)["sources"]
    assert handbook.delete("/collections/handbook", headers=AUTH).status_code == 204
    assert_envelope(handbook.delete("/collections/handbook", headers=AUTH), 404, "not_found")
    response = handbook.post(
        "/rag/query", headers=AUTH, json={"collection": "handbook", "query": "q"}
    )
    assert_envelope(response, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/collections"),
        ("GET", "/collections/handbook"),
        ("POST", "/collections/handbook/documents"),
        ("DELETE", "/collections/handbook"),
        ("DELETE", "/collections/handbook/documents/x"),
    ],
)
def test_every_route_needs_the_token(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, json={"documents": [{"text": "x"}]})
    assert_envelope(response, 401, "unauthorized")


@pytest.mark.parametrize("name", ["Bad", "-lead", "a" * 64, "has space", "dot.name"])
def test_invalid_names_are_400(client: TestClient, name: str) -> None:
    for response in (
        client.post(
            f"/collections/{name}/documents", headers=AUTH, json={"documents": [{"text": "x"}]}
        ),
        client.get(f"/collections/{name}", headers=AUTH),
        client.delete(f"/collections/{name}", headers=AUTH),
    ):
        assert_envelope(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"documents": []},
        {"documents": [{"text": ""}]},
        {"documents": [{"text": "x", "surprise": 1}]},
        {"documents": [{"text": "x", "metadata": "not a map"}]},
    ],
)
def test_invalid_ingest_bodies_are_400(client: TestClient, body: object) -> None:
    response = client.post("/collections/c/documents", headers=AUTH, json=body)
    assert_envelope(response, 400, "invalid_request")


def test_deadline_that_already_passed_is_504(handbook: TestClient) -> None:
    response = handbook.post(
        "/rag/query",
        headers={**AUTH, "X-Trine-Deadline-Ms": "0"},
        json={"collection": "handbook", "query": "a question nobody asked before"},
    )
    assert_envelope(response, 504, "upstream_timeout")
    # A generous deadline changes nothing.
    response = handbook.post(
        "/rag/query",
        headers={**AUTH, "X-Trine-Deadline-Ms": "60000"},
        json={"collection": "handbook", "query": "fruit"},
    )
    assert response.status_code == 200


def test_generate_false_skips_the_provider(handbook: TestClient) -> None:
    rag = handbook.app.state.rag  # type: ignore[attr-defined]
    before = rag.embedder.texts_embedded
    body = query(handbook, query="bananas potassium", mode="keyword", generate=False)
    assert body["answer"] == ""
    assert body["sources"][0] == "bananas"
    # Keyword retrieval and no answer: nothing reached the model at all.
    assert rag.embedder.texts_embedded == before


def test_an_injected_store_is_used_and_left_open(
    make_settings: Callable[..., Settings], embedding_model: OpenVinoEmbedder, tmp_path: Path
) -> None:
    store = SQLiteVectorStore(tmp_path / "injected.sqlite3", dimension=embedding_model.dimension)
    app = create_app(make_settings(), embedder=embedding_model, store=store)
    with TestClient(app) as client:
        response = client.post(
            "/collections/own/documents", headers=AUTH, json={"documents": [{"text": "Hi."}]}
        )
        assert response.status_code == 200
    # The app did not close a store it was given: its owner still can use it.
    stats = asyncio.run(store.get_collection("own"))
    assert stats is not None
    assert stats.documents == 1
    asyncio.run(store.aclose())
