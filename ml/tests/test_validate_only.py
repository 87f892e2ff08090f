"""``X-Trine-Validate-Only: 1`` on the two routes a job runs: the same 400 as a real call,
else 204 with nothing embedded, stored or answered."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient

from constants import AUTH
from trine_ml.app import create_app
from trine_ml.embedding import OpenVinoEmbedder, Vectors
from trine_ml.settings import Settings

VALIDATE = {**AUTH, "X-Trine-Validate-Only": "1"}


class CountingEmbedder:
    """The real model, counting the texts it is asked to embed."""

    def __init__(self, model: OpenVinoEmbedder) -> None:
        self._model = model
        self.texts = 0

    @property
    def model_id(self) -> str:
        return self._model.model_id

    @property
    def dimension(self) -> int:
        return self._model.dimension

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.texts += len(texts)
        return self._model.embed(texts)


@pytest.fixture
def spied(
    make_settings: Callable[..., Settings], embedding_model: OpenVinoEmbedder
) -> Iterator[tuple[TestClient, CountingEmbedder]]:
    embedder = CountingEmbedder(embedding_model)
    app = create_app(make_settings(), embedder=embedder)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client, embedder


def same_as_real_call(client: TestClient, path: str, body: Any) -> None:
    """Both answers are the same 400, byte for byte (the request ID is fixed)."""
    checked = client.post(path, headers={**VALIDATE, "X-Request-ID": "r-1"}, json=body)
    real = client.post(path, headers={**AUTH, "X-Request-ID": "r-1"}, json=body)
    assert real.status_code == 400
    assert (checked.status_code, checked.json()) == (real.status_code, real.json())


def test_valid_rag_query_is_204_and_embeds_nothing(
    spied: tuple[TestClient, CountingEmbedder],
) -> None:
    client, embedder = spied
    for body in (
        {"query": "Who checks keys?", "documents": ["The gateway checks keys."]},
        {"query": "keys", "collection": "nope", "mode": "keyword", "stream": True},
    ):
        response = client.post("/rag/query", headers=VALIDATE, json=body)
        assert (response.status_code, response.content) == (204, b"")
    assert embedder.texts == 0


def test_valid_ingest_is_204_and_stores_nothing(
    spied: tuple[TestClient, CountingEmbedder],
) -> None:
    client, embedder = spied
    body = {"documents": [{"id": "a", "text": "Keys are checked.", "metadata": {"k": "v"}}]}
    response = client.post("/collections/kb/documents", headers=VALIDATE, json=body)
    assert (response.status_code, response.content) == (204, b"")
    assert client.get("/collections/kb", headers=AUTH).status_code == 404
    assert client.get("/collections", headers=AUTH).json() == {"collections": []}
    assert embedder.texts == 0


@pytest.mark.parametrize(
    "body",
    [
        {"query": ""},
        {"query": "q"},
        {"query": "q", "documents": []},
        {"query": "q", "documents": ["a"], "collection": "kb"},
        {"query": "q", "collection": "Bad Name"},
        {"query": "q", "documents": ["a"], "top_k": 51},
        ["not", "an", "object"],
    ],
)
def test_invalid_rag_query_gets_the_real_400(client: TestClient, body: Any) -> None:
    same_as_real_call(client, "/rag/query", body)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/collections/Bad/documents", {"documents": [{"text": "x"}]}),
        ("/collections/kb/documents", {"documents": []}),
        ("/collections/kb/documents", {"documents": [{"text": ""}]}),
        ("/collections/kb/documents", {"documents": [{"text": "x", "extra": 1}]}),
    ],
)
def test_invalid_ingest_gets_the_real_400(client: TestClient, path: str, body: Any) -> None:
    same_as_real_call(client, path, body)


def test_token_is_still_required(client: TestClient) -> None:
    body = {"query": "q", "documents": ["a"]}
    response = client.post("/rag/query", headers={"X-Trine-Validate-Only": "1"}, json=body)
    assert response.status_code == 401
    response = client.post(
        "/collections/kb/documents", headers={"X-Trine-Validate-Only": "1"}, json={}
    )
    assert response.status_code == 401


def test_other_header_values_do_the_work(client: TestClient) -> None:
    body = {"query": "Who checks keys?", "documents": ["The gateway checks keys."]}
    response = client.post("/rag/query", headers={**AUTH, "X-Trine-Validate-Only": "0"}, json=body)
    assert response.status_code == 200
