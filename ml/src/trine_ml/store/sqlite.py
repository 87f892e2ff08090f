"""The embedded store: one SQLite file (WAL) shared by every replica on the machine.

Documents and chunks live in tables, each chunk's vector as a float32 blob, and an FTS5
index over chunk text serves keyword search (BM25). Dense search runs on an in-memory
matrix per collection; each collection row carries a version that every write bumps, and a
query first reads that version (one indexed row) and reloads the matrix if another replica,
or this one, changed the collection since.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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
from trine_ml.store.dense import best_scores
from trine_ml.store.keyword import match_expression

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


@dataclass(frozen=True, slots=True)
class _DenseIndex:
    """One collection's vectors as a matrix, with the chunk key and document of each row."""

    collection_id: int
    version: int
    keys: npt.NDArray[np.int64]
    doc_rows: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]
    doc_metadata: list[dict[str, Any]]


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
        # _lock guards _indexes and _connections; held while an index is (re)built so
        # concurrent queries wait for one load instead of each doing it.
        self._lock = threading.Lock()
        self._indexes: dict[str, _DenseIndex] = {}
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
        with self._lock:
            self._indexes.pop(collection, None)
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
            index = self._current_index(conn, collection)
            scores = index.vectors @ vector.astype(np.float32, copy=False)
            if metadata_filter:
                allowed = np.array(
                    [matches(m, metadata_filter) for m in index.doc_metadata], dtype=bool
                )
                if allowed.size == 0:
                    return []
                scores = np.where(allowed[index.doc_rows], scores, -np.inf)
            return best_scores(index.keys, scores, k)

        return await self._run(search)

    async def keyword_search(
        self, collection: str, query: str, k: int, metadata_filter: MetadataFilter | None = None
    ) -> list[ScoredChunk]:
        def search(conn: sqlite3.Connection) -> list[ScoredChunk]:
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

    def _current_index(self, conn: sqlite3.Connection, collection: str) -> _DenseIndex:
        row = conn.execute(
            "SELECT id, version FROM collections WHERE name = ?", (collection,)
        ).fetchone()
        if row is None:
            with self._lock:  # deleted through another replica: free its matrix here too
                self._indexes.pop(collection, None)
            raise NotFound(f"collection {collection!r} does not exist")
        with self._lock:
            index = self._indexes.get(collection)
            if index is None or (index.collection_id, index.version) != row:
                index = self._load_index(conn, row[0])
                self._indexes[collection] = index
            return index

    def _load_index(self, conn: sqlite3.Connection, collection_id: int) -> _DenseIndex:
        # One read transaction, so the version and the rows it describes agree.
        with _transaction(conn, immediate=False):
            (version,) = conn.execute(
                "SELECT version FROM collections WHERE id = ?", (collection_id,)
            ).fetchone()
            docs = conn.execute(
                "SELECT id, metadata FROM documents WHERE collection_id = ? ORDER BY id",
                (collection_id,),
            ).fetchall()
            rows = conn.execute(
                "SELECT id, document_id, vector FROM chunks WHERE collection_id = ? ORDER BY id",
                (collection_id,),
            ).fetchall()
        position = {doc_row: i for i, (doc_row, _) in enumerate(docs)}
        keys = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        doc_rows = np.fromiter((position[r[1]] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(
            len(rows), self._dimension
        )
        return _DenseIndex(
            collection_id, version, keys, doc_rows, vectors, [json.loads(m) for _, m in docs]
        )

    async def aclose(self) -> None:
        def close_all() -> None:
            with self._lock:
                for conn in self._connections:
                    conn.close()
                self._connections.clear()

        def shut_down() -> None:
            # Connections belong to the pool's threads; close them once the pool is idle.
            self._executor.shutdown(wait=True, cancel_futures=True)
            close_all()

        await asyncio.to_thread(shut_down)


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, *, immediate: bool = True) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` takes the write lock up front, so two replicas never deadlock
    upgrading read locks; a plain ``BEGIN`` gives a consistent read. Commit or roll back."""
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
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
