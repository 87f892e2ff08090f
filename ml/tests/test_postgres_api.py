"""The HTTP API on the PostgreSQL store: the collection API tests run again with
``DATABASE_URL`` set (with ``TRINE_TEST_POSTGRES=1``), and a database that cannot be reached
gives 503 ``unavailable`` while the service stays up (always: it needs no server)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from constants import AUTH
from test_api import assert_envelope

# The collection API tests, collected again here where `client` is backed by PostgreSQL.
from test_collections_api import (  # noqa: F401
    handbook,
    test_deletes,
    test_documents_without_id_get_one,
    test_filters,
    test_hybrid_is_the_default_and_fuses_scores,
    test_list_and_get,
    test_long_document_is_chunked,
    test_query_modes_find_the_right_document,
    test_reposting_an_id_replaces_the_document,
)
from trine_ml.app import create_app
from trine_ml.embedding import OpenVinoEmbedder
from trine_ml.settings import Settings


@pytest.fixture
def client(
    make_settings: Callable[..., Settings], embedding_model: OpenVinoEmbedder, postgres_url: str
) -> Iterator[TestClient]:
    app = create_app(make_settings(database_url=postgres_url), embedder=embedding_model)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_two_replicas_share_one_database(
    make_settings: Callable[..., Settings], embedding_model: OpenVinoEmbedder, postgres_url: str
) -> None:
    first = create_app(make_settings(database_url=postgres_url), embedder=embedding_model)
    second = create_app(make_settings(database_url=postgres_url), embedder=embedding_model)
    with TestClient(first) as one, TestClient(second) as two:
        response = one.post(
            "/collections/shared/documents",
            headers=AUTH,
            json={"documents": [{"id": "a", "text": "Redis holds the shared rate limits."}]},
        )
        assert response.status_code == 200, response.text
        body = two.post(
            "/rag/query",
            headers=AUTH,
            json={"collection": "shared", "query": "where are rate limits kept?", "top_k": 1},
        ).json()
        assert body["sources"] == ["a"]
        assert two.delete("/collections/shared", headers=AUTH).status_code == 204
        assert_envelope(one.get("/collections/shared", headers=AUTH), 404, "not_found")


def test_unreachable_database_gives_503_and_healthz_stays_up(
    make_settings: Callable[..., Settings],
    embedding_model: OpenVinoEmbedder,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A socket directory with no server in it: every connection is refused at once.
    nowhere = tmp_path_factory.mktemp("no-server")
    settings = make_settings(
        database_url=f"postgresql://postgres@/postgres?host={nowhere}", database_timeout_s=0.5
    )
    with TestClient(create_app(settings, embedder=embedding_model)) as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/collections", headers=AUTH)
        error = assert_envelope(response, 503, "unavailable")
        assert "database" in error["message"]
        assert response.headers["retry-after"] == "1"
        response = client.post(
            "/rag/query", headers=AUTH, json={"collection": "kb", "query": "anything"}
        )
        assert_envelope(response, 503, "unavailable")
