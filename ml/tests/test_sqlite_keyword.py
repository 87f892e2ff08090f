"""The SQLite store's in-memory keyword index: it must rank as FTS5's bm25() does, and stay
in step with writes made by any replica."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from store_conformance import DIM, doc, unit
from trine_ml.errors import NotFound
from trine_ml.store.base import DocumentInput, ScoredChunk
from trine_ml.store.keyword import match_expression
from trine_ml.store.sqlite import SQLiteVectorStore

# Words with shared stems (connect/connected/connection), a diacritic, digits and a stopword,
# so tokenizing and stemming matter.
VOCABULARY = [
    "socket",
    "connect",
    "connected",
    "connection",
    "connections",
    "file",
    "files",
    "filesystem",
    "mount",
    "mounted",
    "daemon",
    "daemons",
    "café",
    "cafe",
    "user",
    "users",
    "2024",
    "ipv6",
    "route",
    "routes",
    "routing",
    "kernel",
    "the",
]
QUERIES = [
    "connect the socket",
    "files mounted on the filesystem",
    "connection connections connected",  # one stem three times: three FTS5 phrases
    "café daemon",
    "IPv6 routing 2024",
    "the",  # only a stopword: searched for itself
    "kernel kernels kernel",
    "unknownword",
    # Words FTS5 splits into phrases: "connected sockets" must be adjacent, in that order.
    "connected_sockets files",
    "kernel_kernel",  # overlapping occurrences in "kernel kernel kernel"
    "route_the_kernel daemon",
    "mount_unknownword",
]


def corpus(seed: int, documents: int) -> list[DocumentInput]:
    rng = random.Random(seed)  # noqa: S311  (test data, not secrets)
    return [
        doc(
            f"d{d}",
            *[
                (" ".join(rng.choices(VOCABULARY, k=rng.randint(3, 40))), unit(1, d, c))
                for c in range(rng.randint(1, 4))
            ],
            shard=d % 3,
        )
        for d in range(documents)
    ]


def fts5_ranking(path: Path, collection: str, query: str, k: int) -> list[ScoredChunk]:
    """What FTS5 itself returns, ties by key."""
    conn = sqlite3.connect(path)
    try:
        (cid,) = conn.execute("SELECT id FROM collections WHERE name = ?", (collection,)).fetchone()
        match = match_expression(query, cid)
        rows = conn.execute(
            "SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ?"
            " ORDER BY rank, rowid LIMIT ?",
            (match, k),
        ).fetchall()
    finally:
        conn.close()
    return [ScoredChunk(key, -rank) for key, rank in rows]


def collection_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT version FROM collections WHERE name = 'kb'").fetchone()[0])
    finally:
        conn.close()


def index_version(store: SQLiteVectorStore) -> int:
    """The version of the collection "kb" that the store's keyword index was built from."""
    return store._indexes._keyword["kb"].chunks.version


async def build_keyword_index(store: SQLiteVectorStore, collection: str = "kb") -> None:
    """Searches once, which starts the in-memory index's build, and waits for it, so what
    follows is answered by the index, not by FTS5."""
    await store.keyword_search(collection, "kernel", 1)
    store._indexes.wait_for_rebuilds()
    assert collection in store._indexes._keyword


def assert_same(found: list[ScoredChunk], expected: list[ScoredChunk]) -> None:
    assert [h.key for h in found] == [h.key for h in expected]
    assert [h.score for h in found] == pytest.approx([h.score for h in expected], rel=1e-12)


def test_ranking_equals_fts5_bm25(tmp_path: Path) -> None:
    path = tmp_path / "bm25.sqlite3"

    async def scenario() -> None:
        store = SQLiteVectorStore(path, dimension=DIM)
        try:
            await store.upsert("kb", corpus(1, 60))
            await build_keyword_index(store)
            for query in QUERIES:
                for k in (1, 5, 500):
                    found = await store.keyword_search("kb", query, k)
                    assert_same(found, fts5_ranking(path, "kb", query, k))
            assert await store.keyword_search("kb", "connected", 500)  # the corpus matches
        finally:
            await store.aclose()

    asyncio.run(scenario())


def test_filters_keep_the_unfiltered_order(tmp_path: Path) -> None:
    """BM25 scores do not depend on the filter: a filtered search is the unfiltered ranking
    with the other documents' chunks left out."""
    path = tmp_path / "filters.sqlite3"

    async def scenario() -> None:
        store = SQLiteVectorStore(path, dimension=DIM)
        try:
            await store.upsert("kb", corpus(4, 60))
            await build_keyword_index(store)
            cases: list[tuple[dict[str, Any], set[int]]] = [
                ({"shard": 1}, {1}),
                ({"shard": {"in": [0, 2]}}, {0, 2}),
            ]
            for flt, shards in cases:
                allowed = {f"d{d}" for d in range(60) if d % 3 in shards}
                for query in QUERIES:
                    found = await store.keyword_search("kb", query, 10, flt)
                    ranking = fts5_ranking(path, "kb", query, 10_000)
                    chunks = await store.fetch_chunks("kb", [h.key for h in ranking])
                    kept = [
                        h for h, c in zip(ranking, chunks, strict=True) if c.document_id in allowed
                    ]
                    assert_same(found, kept[:10])
        finally:
            await store.aclose()

    asyncio.run(scenario())


def test_statistics_are_the_collections_own(tmp_path: Path) -> None:
    """Other collections in the file do not change a collection's scores (FTS5 counts the
    whole file)."""

    async def scenario() -> None:
        alone = SQLiteVectorStore(tmp_path / "alone.sqlite3", dimension=DIM)
        shared = SQLiteVectorStore(tmp_path / "shared.sqlite3", dimension=DIM)
        try:
            await alone.upsert("kb", corpus(2, 30))
            await shared.upsert("other", corpus(3, 50))
            await shared.upsert("kb", corpus(2, 30))
            await build_keyword_index(alone)
            await build_keyword_index(shared)
            for query in QUERIES:
                found = await shared.keyword_search("kb", query, 20)
                expected = await alone.keyword_search("kb", query, 20)
                keys = await shared.fetch_chunks("kb", [h.key for h in found])
                expected_keys = await alone.fetch_chunks("kb", [h.key for h in expected])
                assert [(c.document_id, c.seq) for c in keys] == [
                    (c.document_id, c.seq) for c in expected_keys
                ]
                assert [h.score for h in found] == pytest.approx([h.score for h in expected])
        finally:
            await alone.aclose()
            await shared.aclose()

    asyncio.run(scenario())


def test_a_word_fts5_splits_is_matched_as_its_phrase(tmp_path: Path) -> None:
    # \\w+ keeps "mount_point" as one query word; FTS5 reads it as the phrase "mount point".
    path = tmp_path / "phrase.sqlite3"

    async def scenario() -> None:
        store = SQLiteVectorStore(path, dimension=DIM)
        try:
            await store.upsert(
                "kb",
                [
                    doc("a", ("the mount point is busy", unit(1))),
                    doc("b", ("point the mount elsewhere", unit(0, 1))),
                ],
            )
            await build_keyword_index(store)
            found = await store.keyword_search("kb", "mount_point", 5)
            assert [c.document_id for c in await store.fetch_chunks("kb", [found[0].key])] == ["a"]
            assert_same(found, fts5_ranking(path, "kb", "mount_point", 5))
        finally:
            await store.aclose()

    asyncio.run(scenario())


def test_a_replica_searches_another_replicas_writes_at_once(tmp_path: Path) -> None:
    """After another replica writes, a keyword search reflects the write immediately (on
    FTS5 while the index is rebuilt), and the rebuilt index ranks as FTS5 does."""
    path = tmp_path / "shared.sqlite3"

    async def scenario() -> None:
        reader = SQLiteVectorStore(path, dimension=DIM)
        writer = SQLiteVectorStore(path, dimension=DIM)
        try:
            await writer.upsert("kb", corpus(4, 20))
            assert_same(
                await reader.keyword_search("kb", "kernel", 50),
                fts5_ranking(path, "kb", "kernel", 50),
            )
            steps = [
                writer.upsert("kb", [doc("new", ("zebra kernel", unit(1)))]),
                writer.upsert("kb", [doc("d3", ("zebra zebra", unit(1)))]),  # replaces d3
                writer.delete_document("kb", "new"),
            ]
            for step in steps:
                await step
                for _ in range(2):  # before and after the rebuild
                    for query in ("zebra", "kernel", "connect zebra"):
                        assert_same(
                            await reader.keyword_search("kb", query, 50),
                            fts5_ranking(path, "kb", query, 50),
                        )
                    reader._indexes.wait_for_rebuilds()
                assert index_version(reader) == collection_version(path)
            await writer.delete_collection("kb")
            with pytest.raises(NotFound):
                await reader.keyword_search("kb", "zebra", 5)
        finally:
            await reader.aclose()
            await writer.aclose()

    asyncio.run(scenario())
