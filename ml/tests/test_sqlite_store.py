"""The SQLite store: the shared conformance checks, plus what is particular to one file
shared by several replicas."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from store_conformance import DIM, FRUIT, SANDBOX, StoreFactory, VectorStoreConformance, doc, unit
from trine_ml.store.base import VectorStore
from trine_ml.store.dense import INT8_SCAN_ROWS, CollectionRows, DenseIndex, best_scores
from trine_ml.store.int8_scan import Int8Scan
from trine_ml.store.keyword import match_expression
from trine_ml.store.sqlite import SQLiteVectorStore


@pytest.fixture
def make_store(tmp_path: Path) -> StoreFactory:
    async def build() -> VectorStore:
        return SQLiteVectorStore(tmp_path / "store.sqlite3", dimension=DIM)

    return build


class TestSQLiteConformance(VectorStoreConformance):
    pass


def test_opening_a_store_on_an_existing_file_writes_nothing(tmp_path: Path) -> None:
    # Replicas and workers open the file while others search it: rewriting the FTS5
    # configuration then would make their running keyword searches fail.
    path = tmp_path / "shared.sqlite3"
    asyncio.run(SQLiteVectorStore(path, dimension=DIM).aclose())
    watcher = sqlite3.connect(path)
    try:
        before = watcher.execute("PRAGMA data_version").fetchone()
        asyncio.run(SQLiteVectorStore(path, dimension=DIM).aclose())
        assert watcher.execute("PRAGMA data_version").fetchone() == before
    finally:
        watcher.close()


def test_file_is_in_wal_mode_with_fts5(tmp_path: Path) -> None:
    path = tmp_path / "wal.sqlite3"
    store = SQLiteVectorStore(path, dimension=DIM)
    asyncio.run(store.aclose())
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {"collections", "documents", "chunks", "chunks_fts"} <= tables
    finally:
        conn.close()


def test_a_replica_sees_another_replicas_writes(tmp_path: Path) -> None:
    """Two stores on one file, as two replicas: each query must reflect the other's writes,
    although each keeps its own in-memory matrix."""
    path = tmp_path / "shared.sqlite3"

    async def scenario() -> None:
        first = SQLiteVectorStore(path, dimension=DIM)
        second = SQLiteVectorStore(path, dimension=DIM)
        try:
            await first.upsert("kb", [FRUIT])
            assert len(await second.dense_search("kb", unit(1, 0), 10)) == 2  # loads matrix
            await first.upsert("kb", [SANDBOX])
            hits = await second.dense_search("kb", unit(0, 1), 10)
            top = await second.fetch_chunks("kb", [hits[0].key])
            assert len(hits) == 3
            assert top[0].document_id == "sandbox"
            await first.delete_document("kb", "sandbox")
            assert len(await second.dense_search("kb", unit(0, 1), 10)) == 2
            await first.delete_collection("kb")
            await first.upsert("kb", [doc("new", ("fresh start", unit(0, 0, 1)))])
            hits = await second.dense_search("kb", unit(0, 0, 1), 10)
            assert [
                c.document_id for c in await second.fetch_chunks("kb", [h.key for h in hits])
            ] == ["new"]
        finally:
            await first.aclose()
            await second.aclose()

    asyncio.run(scenario())


def test_vector_of_wrong_dimension_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteVectorStore(tmp_path / "dim.sqlite3", dimension=DIM + 1)
        try:
            with pytest.raises(ValueError, match="shape"):
                await store.upsert("kb", [FRUIT])
            assert await store.get_collection("kb") is None
        finally:
            await store.aclose()

    asyncio.run(scenario())


def test_match_expression_drops_stopwords_and_quotes_words() -> None:
    assert match_expression("What is the cron table?", 3) == (
        'collection_id : 3 AND text : ("cron" OR "table")'
    )
    assert match_expression("the and of", 3) == (
        'collection_id : 3 AND text : ("the" OR "and" OR "of")'
    )
    assert match_expression(' "quoted" NEAR ', 1) == (
        'collection_id : 1 AND text : ("quoted" OR "near")'
    )
    assert match_expression("?!", 1) is None


def test_a_number_in_the_query_is_not_a_collection(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteVectorStore(tmp_path / "ids.sqlite3", dimension=DIM)
        try:
            await store.upsert("kb", [FRUIT])
            await store.upsert("other", [SANDBOX])
            # "1" and "2" are the collections' ids; as query words they must match no row.
            assert await store.keyword_search("other", "1 2", 5) == []
            assert len(await store.keyword_search("other", "sandbox 1", 5)) == 1
            assert await store.keyword_search("other", "bananas", 5) == []
        finally:
            await store.aclose()

    asyncio.run(scenario())


def test_best_scores_break_ties_at_the_cut_by_row() -> None:
    keys = np.array([10, 11, 12, 13, 14], dtype=np.int64)
    scores = np.array([1.0, 2.0, 3.0, 2.0, 2.0], dtype=np.float32)
    assert [h.key for h in best_scores(keys, scores, 3)] == [12, 11, 13]
    scores[0] = -np.inf  # excluded by a filter: never returned, whatever k is
    assert [h.key for h in best_scores(keys, scores, 10)] == [12, 11, 13, 14]


def near_ties(rng: np.random.Generator, rows: int, dim: int) -> npt.NDArray[np.float32]:
    """Unit vectors in a few tight clusters: many scores closer together than int8 rounding
    moves them, so an approximate ranking alone would get the order wrong."""
    centres = rng.standard_normal((8, dim))
    vectors = centres[rng.integers(0, 8, rows)] + 1e-2 * rng.standard_normal((rows, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


@pytest.mark.parametrize("dim", [DIM, 384])
def test_int8_scan_finds_exactly_what_a_full_scan_finds(dim: int) -> None:
    rows = INT8_SCAN_ROWS + 3
    rng = np.random.default_rng(7)
    vectors = near_ties(rng, rows, dim)
    vectors[5] = 0.0  # a zero row has a zero scale
    keys = np.arange(100, 100 + rows, dtype=np.int64)
    index = DenseIndex.build(CollectionRows(1, 1, keys, np.zeros(rows, np.int64), [{}]), vectors)
    assert index.int8 is not None
    few = np.zeros(rows, dtype=bool)
    few[[3, 9_000, rows - 1]] = True
    for query in [vectors[11], vectors[12] + 0.01, rng.standard_normal(dim)]:
        query = (query / np.linalg.norm(query)).astype(np.float32)
        exact = vectors @ query
        for k in (1, 10, 100, rows):
            for allowed in (None, rng.random(rows) < 0.5, few):
                expected = exact.copy()
                if allowed is not None:
                    expected[~allowed] = -np.inf
                want = best_scores(keys, expected, k)
                got = index.search(query, k, allowed)
                # Scores equal to float32 rounding (rows that tie to within it may swap), each
                # the row's own, and no row twice.
                assert len(got) == len(want)
                assert len({h.key for h in got}) == len(got)
                got_scores = np.array([h.score for h in got])
                want_scores = np.array([h.score for h in want])
                np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=1e-6)
                own = expected[np.array([h.key for h in got], dtype=np.int64) - 100]
                np.testing.assert_allclose(got_scores, own, rtol=0, atol=1e-6)


def test_int8_error_stays_within_its_bound() -> None:
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((INT8_SCAN_ROWS, 384)).astype(np.float32)
    vectors *= rng.uniform(0.01, 3, (INT8_SCAN_ROWS, 1)).astype(np.float32)  # scales vary
    scan = Int8Scan(vectors)
    for _ in range(5):
        query = rng.standard_normal(384).astype(np.float32)
        approx, bound = scan.scores(query)
        error = np.abs(approx - vectors @ query)
        assert (error <= bound).all()
        assert error.max() > 0  # it is an approximation: the bound is what makes it exact


def test_small_matrices_are_scanned_in_float32_only() -> None:
    rows = INT8_SCAN_ROWS - 1
    vectors = np.ones((rows, DIM), dtype=np.float32)
    chunks = CollectionRows(1, 1, np.arange(rows, dtype=np.int64), np.zeros(rows, np.int64), [{}])
    assert DenseIndex.build(chunks, vectors).int8 is None


def test_dense_matrix_of_many_load_batches(tmp_path: Path) -> None:
    # More chunks than one load batch, each vector its own direction: each must find itself.
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((2500, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    docs = [doc(f"d{i}", (f"chunk {i}", vectors[i])) for i in range(len(vectors))]

    async def scenario() -> None:
        store = SQLiteVectorStore(tmp_path / "many.sqlite3", dimension=DIM)
        try:
            await store.upsert("kb", docs)
            for i in (0, 1023, 1024, 2047, 2499):
                hits = await store.dense_search("kb", vectors[i], 1)
                (chunk,) = await store.fetch_chunks("kb", [hits[0].key])
                assert chunk.document_id == f"d{i}"
        finally:
            await store.aclose()

    asyncio.run(scenario())
