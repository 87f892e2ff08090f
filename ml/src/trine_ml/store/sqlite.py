"""The embedded store: one SQLite file (WAL) shared by every replica on the machine.

Documents and chunks live in tables, each chunk's vector as a float32 blob, and an FTS5
index over chunk text holds the words for keyword search (BM25). Searches run on in-memory
copies of each collection, a matrix of its vectors and arrays of its FTS5 postings, kept in
step with the file by a version that every write bumps (see :mod:`trine_ml.store.sqlite_index`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from trine_ml.errors import NotFound
from trine_ml.store.base import (
    CollectionStats,
    DocumentInput,
    MetadataFilter,
    ScoredChunk,
    StoredChunk,
    matches,
)
from trine_ml.store.keyword import content_words, match_expression
from trine_ml.store.sqlite_bm25 import TEMP_TABLES, query_phrases
from trine_ml.store.sqlite_index import CollectionIndexes

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    collection_id INTEGER NOT NULL REFERENCES collections(id),
    doc_id TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    UNIQUE (collection_id, doc_id)
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    collection_id INTEGER NOT NULL,
    document_id INTEGER NOT NULL REFERENCES documents(id),
    seq INTEGER NOT NULL,
    text TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_collection ON chunks (collection_id);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks (document_id);
-- The collection is an indexed column, so a search intersects posting lists instead of
-- checking every match's collection; it carries no weight in the ranking.
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, collection_id, content='chunks', content_rowid='id', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text, collection_id)
    VALUES (new.id, new.text, new.collection_id);
END;
CREATE TRIGGER IF NOT EXISTS chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text, collection_id)
    VALUES ('delete', old.id, old.text, old.collection_id);
END;
"""
_RANK_FUNCTION = "bm25(1.0, 0.0)"
_RANKING = "INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('rank', ?)"

# How long a writer waits for another replica's transaction before giving up.
_BUSY_TIMEOUT_MS = 30_000


def _filter_json_matches(metadata_json: str, filter_json: str) -> int:
    return int(matches(json.loads(metadata_json), json.loads(filter_json)))


class SQLiteVectorStore:
    """:class:`~trine_ml.store.base.VectorStore` on SQLite. Blocking work runs on a small
    thread pool, each thread with its own connection."""

    def __init__(self, path: Path, *, dimension: int, threads: int = 2) -> None:
        self._path = path
        self._dimension = dimension
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sqlite")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()  # guards _connections
        self._indexes = CollectionIndexes(dimension, self._conn)
        path.parent.mkdir(parents=True, exist_ok=True)
        setup = self._connect()
        try:
            setup.executescript(_SCHEMA)
            # Written only when missing: changing the FTS5 configuration makes every other
            # connection's FTS5 query that is running at that moment fail.
            rank = setup.execute("SELECT v FROM chunks_fts_config WHERE k = 'rank'").fetchone()
            if rank is None or rank[0] != _RANK_FUNCTION:
                setup.execute(_RANKING, (_RANK_FUNCTION,))
        finally:
            setup.close()

    def _connect(self) -> sqlite3.Connection:
        # Each connection is used by one pool thread; only aclose() touches it from another,
        # once the pool is idle.
        conn = sqlite3.connect(
            self._path,
            timeout=_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        conn.create_function("trine_match", 2, _filter_json_matches, deterministic=True)
        conn.executescript(TEMP_TABLES)  # per connection, in memory: writes nothing to the file
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(self._conn()))

    # Writes ---------------------------------------------------------------------------

    async def upsert(self, collection: str, documents: Sequence[DocumentInput]) -> None:
        rows = [
            (
                doc,
                json.dumps(dict(doc.metadata), ensure_ascii=False),
                [(i, c.text, _blob(c.vector, self._dimension)) for i, c in enumerate(doc.chunks)],
            )
            for doc in documents
        ]

        def write(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute("INSERT OR IGNORE INTO collections (name) VALUES (?)", (collection,))
                (cid,) = conn.execute(
                    "SELECT id FROM collections WHERE name = ?", (collection,)
                ).fetchone()
                for doc, metadata, chunks in rows:
                    _delete_document_rows(conn, cid, doc.id)
                    cur = conn.execute(
                        "INSERT INTO documents (collection_id, doc_id, text, metadata)"
                        " VALUES (?, ?, ?, ?)",
                        (cid, doc.id, doc.text, metadata),
                    )
                    conn.executemany(
                        "INSERT INTO chunks (collection_id, document_id, seq, text, vector)"
                        " VALUES (?, ?, ?, ?, ?)",
                        [(cid, cur.lastrowid, seq, text, blob) for seq, text, blob in chunks],
                    )
                conn.execute("UPDATE collections SET version = version + 1 WHERE id = ?", (cid,))

        await self._run(write)

    async def delete_document(self, collection: str, document_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                row = conn.execute(
                    "SELECT id FROM collections WHERE name = ?", (collection,)
                ).fetchone()
                if row is None or not _delete_document_rows(conn, row[0], document_id):
                    return False
                conn.execute("UPDATE collections SET version = version + 1 WHERE id = ?", row)
                return True

        return await self._run(delete)

    async def delete_collection(self, collection: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                row = conn.execute(
                    "SELECT id FROM collections WHERE name = ?", (collection,)
                ).fetchone()
                if row is None:
                    return False
                conn.execute("DELETE FROM chunks WHERE collection_id = ?", row)
                conn.execute("DELETE FROM documents WHERE collection_id = ?", row)
                conn.execute("DELETE FROM collections WHERE id = ?", row)
                return True

        deleted = await self._run(delete)
        self._indexes.forget(collection)
        return deleted

    # Reads ----------------------------------------------------------------------------

    async def list_collections(self) -> list[CollectionStats]:
        return await self._run(lambda conn: _stats(conn, None))

    async def get_collection(self, collection: str) -> CollectionStats | None:
        found = await self._run(lambda conn: _stats(conn, collection))
        return found[0] if found else None

    async def dense_search(
        self,
        collection: str,
        vector: npt.NDArray[np.float32],
        k: int,
        metadata_filter: MetadataFilter | None = None,
    ) -> list[ScoredChunk]:
        def search(conn: sqlite3.Connection) -> list[ScoredChunk]:
            index = self._indexes.dense(conn, collection)
            return index.search(vector, k, index.chunks.allowed(metadata_filter))

        return await self._run(search)

    async def keyword_search(
        self, collection: str, query: str, k: int, metadata_filter: MetadataFilter | None = None
    ) -> list[ScoredChunk]:
        def search(conn: sqlite3.Connection) -> list[ScoredChunk]:
            words = content_words(query)
            index = self._indexes.keyword(conn, collection)
            phrases = query_phrases(conn, words) if index is not None and words else None
            if index is not None and phrases is not None:
                return index.search(phrases, k, index.chunks.allowed(metadata_filter))
            return fts5_search(conn)

        def fts5_search(conn: sqlite3.Connection) -> list[ScoredChunk]:
            match = match_expression(query, _collection_id(conn, collection))
            if match is None:
                return []
            if metadata_filter:
                rows = conn.execute(
                    "SELECT f.rowid, f.rank FROM chunks_fts f"
                    " JOIN chunks c ON c.id = f.rowid JOIN documents d ON d.id = c.document_id"
                    " WHERE chunks_fts MATCH ? AND trine_match(d.metadata, ?)"
                    " ORDER BY f.rank LIMIT ?",
                    (match, json.dumps(dict(metadata_filter)), k),
                )
            else:
                rows = conn.execute(
                    "SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ?"
                    " ORDER BY rank LIMIT ?",
                    (match, k),
                )
            # bm25 is lower-is-better; negate so every search scores higher-is-better.
            return [ScoredChunk(key, -rank) for key, rank in rows]

        return await self._run(search)

    async def fetch_chunks(self, collection: str, keys: Sequence[int]) -> list[StoredChunk]:
        def fetch(conn: sqlite3.Connection) -> list[StoredChunk]:
            cid = _collection_id(conn, collection)
            rows = conn.execute(
                "SELECT c.id, d.doc_id, c.seq, c.text, d.metadata FROM chunks c"
                " JOIN documents d ON d.id = c.document_id"
                " WHERE c.collection_id = ? AND c.id IN (SELECT value FROM json_each(?))",
                (cid, json.dumps([int(key) for key in keys])),
            ).fetchall()
            by_key = {
                row[0]: StoredChunk(row[0], row[1], row[2], row[3], json.loads(row[4]))
                for row in rows
            }
            return [by_key[key] for key in keys if key in by_key]

        if not keys:
            return []
        return await self._run(fetch)

    async def aclose(self) -> None:
        def close_all() -> None:
            with self._lock:
                for conn in self._connections:
                    conn.close()
                self._connections.clear()

        def shut_down() -> None:
            # Connections belong to the pools' threads; close them once the pools are idle.
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._indexes.close()
            close_all()

        await asyncio.to_thread(shut_down)


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction, committed or rolled back. ``BEGIN IMMEDIATE`` takes the write
    lock up front, so two replicas never deadlock upgrading read locks."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _blob(vector: npt.NDArray[np.float32], dimension: int) -> bytes:
    array = np.ascontiguousarray(vector, dtype=np.float32)
    if array.shape != (dimension,):
        raise ValueError(f"vector has shape {array.shape}, expected ({dimension},)")
    return array.tobytes()


def _collection_id(conn: sqlite3.Connection, collection: str) -> int:
    row = conn.execute("SELECT id FROM collections WHERE name = ?", (collection,)).fetchone()
    if row is None:
        raise NotFound(f"collection {collection!r} does not exist")
    return int(row[0])


def _delete_document_rows(conn: sqlite3.Connection, collection_id: int, doc_id: str) -> bool:
    row = conn.execute(
        "SELECT id FROM documents WHERE collection_id = ? AND doc_id = ?", (collection_id, doc_id)
    ).fetchone()
    if row is None:
        return False
    conn.execute("DELETE FROM chunks WHERE document_id = ?", row)
    conn.execute("DELETE FROM documents WHERE id = ?", row)
    return True


def _stats(conn: sqlite3.Connection, name: str | None) -> list[CollectionStats]:
    sql = (
        "SELECT name,"
        " (SELECT count(*) FROM documents d WHERE d.collection_id = c.id),"
        " (SELECT count(*) FROM chunks k WHERE k.collection_id = c.id)"
        " FROM collections c"
    )
    params: tuple[str, ...] = ()
    if name is not None:
        sql += " WHERE name = ?"
        params = (name,)
    rows = conn.execute(sql + " ORDER BY name", params).fetchall()
    return [CollectionStats(n, docs, chunks) for n, docs, chunks in rows]
