"""The PostgreSQL + pgvector store: the shared conformance checks, plus migrations run by
replicas starting together, HNSW recall against exact search, filters and full-text ranking
in SQL, and a database that goes away and comes back. Runs with ``TRINE_TEST_POSTGRES=1``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import psycopg
import pytest

from pg_harness import private_server
from store_conformance import (
    DIM,
    FRUIT,
    GATEWAY,
    SANDBOX,
    StoreFactory,
    VectorStoreConformance,
    doc,
    unit,
)
from trine_ml.errors import Unavailable
from trine_ml.store.base import ChunkInput, DocumentInput, VectorStore
from trine_ml.store.postgres import PostgresVectorStore, SchemaMismatch
from trine_ml.store.postgres_schema import LATEST_VERSION, migrate

T = TypeVar("T")


async def open_store(url: str, *, dimension: int = DIM, **options: Any) -> PostgresVectorStore:
    store = PostgresVectorStore(url, dimension=dimension, **options)
    await store.open()
    return store


def with_store(
    url: str, scenario: Callable[[PostgresVectorStore], Awaitable[T]], **options: Any
) -> T:
    async def main() -> T:
        store = await open_store(url, **options)
        try:
            return await scenario(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


@pytest.fixture
def make_store(postgres_url: str) -> StoreFactory:
    async def build() -> VectorStore:
        return await open_store(postgres_url)

    return build


class TestPostgresConformance(VectorStoreConformance):
    pass


def test_migration_from_four_replicas_at_once(postgres_url: str) -> None:
    """Four sessions migrate a fresh database at the same moment: one applies the schema,
    the others wait on the advisory lock and find it done; nobody fails."""
    start = threading.Barrier(4)
    applied: list[int] = []
    errors: list[BaseException] = []

    async def one_replica() -> int:
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            start.wait()
            return await migrate(conn, DIM)

    def run() -> None:
        try:
            applied.append(asyncio.run(one_replica()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(applied) == [0, 0, 0, LATEST_VERSION]
    with psycopg.connect(postgres_url) as conn:
        versions = conn.execute("SELECT version FROM ml_schema_migrations").fetchall()
        assert versions == [(v,) for v in range(1, LATEST_VERSION + 1)]
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'ml\\_%'"
        ).fetchone()
        assert tables == (4,)
        assert conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'vector'"
        ).fetchone() == (1,)
    # A later start changes nothing, and a model of another size is refused.
    assert with_store(postgres_url, lambda s: s.list_collections()) == []

    async def other_dimension() -> None:
        await open_store(postgres_url, dimension=DIM * 2)

    with pytest.raises(SchemaMismatch, match="dimensions"):
        asyncio.run(other_dimension())


def clustered_vectors(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    """Unit vectors around 40 random centres: sentence embeddings are clustered like this,
    unlike uniform noise."""
    centres = rng.standard_normal((40, dim)).astype(np.float32)
    points = centres[rng.integers(0, 40, count)] + 0.6 * rng.standard_normal((count, dim))
    points = points.astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def test_hnsw_recall_at_10_against_exact_search(postgres_url: str) -> None:
    rng = np.random.default_rng(7)
    dim, count = 384, 3000
    vectors = clustered_vectors(rng, count, dim)
    queries = clustered_vectors(rng, 60, dim)
    docs = [
        DocumentInput(f"d{i}", f"vector {i}", {"half": i % 2}, [ChunkInput(f"vector {i}", v)])
        for i, v in enumerate(vectors)
    ]

    async def scenario(store: PostgresVectorStore) -> tuple[float, float, str]:
        for first in range(0, count, 500):
            await store.upsert("big", docs[first : first + 500])
        await store.upsert("small", [doc("x", ("other collection", vectors[0]))])
        async with store._pool.connection() as conn:
            # As autovacuum would: with fresh statistics the planner picks the HNSW index
            # (right after a bulk load it may scan exactly instead, which is slower but exact).
            await conn.execute("ANALYZE ml_chunks")
        found: list[float] = []
        found_filtered: list[float] = []
        keys: dict[int, int] = {}
        for query in queries:
            hits = await store.dense_search("big", query, 10)
            chunks = await store.fetch_chunks("big", [h.key for h in hits])
            got = {int(c.document_id[1:]) for c in chunks}
            exact = set(np.argsort(-(vectors @ query), kind="stable")[:10].tolist())
            found.append(len(got & exact) / 10)
            hits = await store.dense_search("big", query, 10, {"half": 1})
            chunks = await store.fetch_chunks("big", [h.key for h in hits])
            keys.update((h.key, int(c.document_id[1:])) for h, c in zip(hits, chunks, strict=True))
            odd = np.where(np.arange(count) % 2 == 1, vectors @ query, -np.inf)
            exact = set(np.argsort(-odd, kind="stable")[:10].tolist())
            found_filtered.append(len({keys[h.key] for h in hits} & exact) / 10)
        async with store._pool.connection() as conn:
            await conn.execute("SET hnsw.iterative_scan = relaxed_order")
            cur = await conn.execute(
                "EXPLAIN SELECT id FROM ml_chunks WHERE collection_id = 1"
                " ORDER BY embedding <=> %s LIMIT 10",
                (queries[0],),
            )
            plan = "\n".join(row[0] for row in await cur.fetchall())
        return float(np.mean(found)), float(np.mean(found_filtered)), plan

    recall, filtered_recall, plan = with_store(postgres_url, scenario, dimension=dim)
    assert "ml_chunks_embedding" in plan  # the HNSW index answered, not a scan
    print(f"recall@10 {recall:.3f}, with a filter {filtered_recall:.3f}")  # noqa: T201
    assert recall >= 0.95
    assert filtered_recall >= 0.95


def test_filters_are_json_typed_and_keys_are_parameters(postgres_url: str) -> None:
    odd = doc("odd", ("odd metadata", unit(1, 0)), **{"it's": "quoted", "flag": True, "n": 1.0})

    async def scenario(store: PostgresVectorStore) -> None:
        await store.upsert("kb", [FRUIT, SANDBOX, GATEWAY, odd])

        async def docs(flt: dict[str, Any]) -> set[str]:
            hits = await store.dense_search("kb", unit(1, 1, 1), 10, flt)
            keyword = await store.keyword_search("kb", "metadata bananas sandbox gateway", 10, flt)
            assert {h.key for h in keyword} <= {h.key for h in hits}
            return {c.document_id for c in await store.fetch_chunks("kb", [h.key for h in hits])}

        assert await docs({"it's": "quoted"}) == {"odd"}
        assert await docs({"it's'; DROP TABLE ml_chunks; --": "x"}) == set()
        assert await docs({"flag": True}) == {"odd"}
        assert await docs({"flag": 1}) == set()  # JSON true is not 1
        assert await docs({"n": 1}) == {"odd"}  # 1.0 and 1 are the same JSON number
        assert await docs({"n": {"in": [True, "1"]}}) == set()
        assert await docs({"year": {"in": []}}) == set()
        assert await docs({"lang": {"in": ["en"]}, "year": {"in": [2020, 2024]}}) == {"fruit"}
        assert (await store.get_collection("kb")) is not None

    with_store(postgres_url, scenario)


def test_full_text_ranking(postgres_url: str) -> None:
    docs = [
        doc("both", ("The sandbox meters fuel; fuel limits stop runaway guests.", unit(1))),
        doc("one", ("Fuel is sold at the station.", unit(0, 1))),
        doc("stem", ("The workers were running jobs.", unit(0, 0, 1))),
        doc("none", ("Nothing relevant here.", unit(1, 1))),
    ]

    async def scenario(store: PostgresVectorStore) -> None:
        await store.upsert("kb", docs)

        async def ranked(query: str) -> list[str]:
            hits = await store.keyword_search("kb", query, 10)
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            return [c.document_id for c in await store.fetch_chunks("kb", [h.key for h in hits])]

        # Matching any word; more matches and closer words rank higher.
        assert await ranked("sandbox fuel") == ["both", "one"]
        assert await ranked("runs") == ["stem"]  # English stemming: runs ~ running
        assert await ranked("'; DROP TABLE ml_chunks; --") == []
        assert await ranked("fuel & !sandbox | <-> :*") == ["both", "one"]
        assert await ranked("the of and") == []  # only stopwords
        assert len(await ranked("fuel")) == 2

    with_store(postgres_url, scenario)


def test_unreachable_database_is_unavailable_then_recovers() -> None:
    """The replica starts while the database is down, answers 503 ``unavailable`` (no
    hang, no crash), and works once it is back; the same after a restart mid-flight."""

    async def eventually(call: Callable[[], Awaitable[T]]) -> T:
        for _ in range(100):
            try:
                return await call()
            except Unavailable:
                await asyncio.sleep(0.1)
        raise AssertionError("the store did not recover")

    async def scenario(server: Any, url: str) -> None:
        store = await open_store(url, pool_timeout_s=1.0)  # the database is down: no raise
        try:
            with pytest.raises(Unavailable) as raised:
                await store.get_collection("kb")
            assert raised.value.status_code == 503
            assert raised.value.error_type == "unavailable"
            assert "database" in raised.value.message

            server.ensure_postgres_running()
            await eventually(lambda: store.upsert("kb", [FRUIT]))  # migrates, then writes
            assert len(await store.dense_search("kb", unit(1, 0), 5)) == 2

            server.stop()
            with pytest.raises(Unavailable):
                await store.dense_search("kb", unit(1, 0), 5)
            server.ensure_postgres_running()
            hits = await eventually(lambda: store.dense_search("kb", unit(1, 0), 5))
            assert len(hits) == 2
        finally:
            await store.aclose()

    with private_server() as server:
        url = server.get_uri()
        server.stop()
        asyncio.run(scenario(server, url))
