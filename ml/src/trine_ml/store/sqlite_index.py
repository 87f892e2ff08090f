"""The SQLite store's in-memory copies of its collections, kept in step with the shared file.

Each collection row carries a version that every write bumps. A search first reads that
version (one indexed row) and compares it with the version its in-memory index was built
from, so writes by any replica are seen by the next search everywhere:

- the dense matrix is reloaded on the spot (about a second at 100k chunks);
- the keyword index takes several seconds to build at that size, so while it is missing or
  out of date the search runs on FTS5 directly (slower, always current) and one background
  thread builds it: no search waits for a build. Builds follow searches, not writes: a
  collection nobody searches is not indexed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from trine_ml.errors import NotFound
from trine_ml.store.dense import CollectionRows, DenseIndex
from trine_ml.store.sqlite_bm25 import KeywordIndex, load_keyword_index

logger = logging.getLogger(__name__)

# Vectors read per batch when loading a dense matrix (1.5 MiB at 384 dimensions).
_LOAD_BATCH = 1024


class CollectionIndexes:
    """One store's dense and keyword indexes by collection name. ``connection`` returns the
    calling thread's connection to the store's file."""

    def __init__(self, dimension: int, connection: Callable[[], sqlite3.Connection]) -> None:
        self._dimension = dimension
        self._connection = connection
        # _lock guards the three fields below; held while a dense matrix is (re)loaded so
        # concurrent searches wait for one load instead of each doing it.
        self._lock = threading.Lock()
        self._dense: dict[str, DenseIndex] = {}
        self._keyword: dict[str, KeywordIndex] = {}
        self._rebuilding: set[str] = set()
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-bm25")

    def dense(self, conn: sqlite3.Connection, collection: str) -> DenseIndex:
        """The collection's current dense matrix, reloaded first if it is out of date."""
        current = self._version(conn, collection)
        with self._lock:
            index = self._dense.get(collection)
            if index is None or _version_of(index.chunks) != current:
                index = DenseIndex.build(*self._load_dense(conn, current[0]))
                self._dense[collection] = index
            return index

    def keyword(self, conn: sqlite3.Connection, collection: str) -> KeywordIndex | None:
        """The collection's current keyword index, or None while it is being built (search
        FTS5 then). Raises NotFound for an unknown collection."""
        current = self._version(conn, collection)
        with self._lock:
            index = self._keyword.get(collection)
            if index is not None and _version_of(index.chunks) == current:
                return index
            if collection not in self._rebuilding:
                self._rebuilding.add(collection)
                self._builder.submit(self._rebuild, collection)
            return None

    def forget(self, collection: str) -> None:
        with self._lock:
            self._dense.pop(collection, None)
            self._keyword.pop(collection, None)

    def wait_for_rebuilds(self) -> None:
        """Returns once every keyword rebuild scheduled so far has finished."""
        self._builder.submit(lambda: None).result()

    def close(self) -> None:
        self._builder.shutdown(wait=True, cancel_futures=True)

    def _version(self, conn: sqlite3.Connection, collection: str) -> tuple[int, int]:
        row = conn.execute(
            "SELECT id, version FROM collections WHERE name = ?", (collection,)
        ).fetchone()
        if row is None:
            self.forget(collection)  # deleted through another replica: free it here too
            raise NotFound(f"collection {collection!r} does not exist")
        return int(row[0]), int(row[1])

    def _rebuild(self, collection: str) -> None:
        try:
            conn = self._connection()
            row = conn.execute(
                "SELECT id FROM collections WHERE name = ?", (collection,)
            ).fetchone()
            if row is None:
                self.forget(collection)
                return
            index = self._load_keyword(conn, int(row[0]))
            with self._lock:
                self._keyword[collection] = index
        except Exception:
            # Searches keep using FTS5 and schedule another rebuild on their next call.
            logger.exception("rebuilding the keyword index of %r failed", collection)
        finally:
            with self._lock:
                self._rebuilding.discard(collection)

    def _load_dense(
        self, conn: sqlite3.Connection, collection_id: int
    ) -> tuple[CollectionRows, npt.NDArray[np.float32]]:
        with _read_transaction(conn):
            chunks = _read_rows(conn, collection_id)
            vectors = np.empty((len(chunks.keys), self._dimension), dtype=np.float32)
            blobs = conn.execute(
                "SELECT vector FROM chunks WHERE collection_id = ? ORDER BY id", (collection_id,)
            )
            # Copied in batches straight into the matrix: holding every blob first would
            # double the load's peak memory, and the freed blobs would stay in the heap.
            row = 0
            while batch := blobs.fetchmany(_LOAD_BATCH):
                block = np.frombuffer(b"".join(b for (b,) in batch), dtype=np.float32)
                vectors[row : row + len(batch)] = block.reshape(len(batch), self._dimension)
                row += len(batch)
        return chunks, vectors

    def _load_keyword(self, conn: sqlite3.Connection, collection_id: int) -> KeywordIndex:
        with _read_transaction(conn):
            return load_keyword_index(conn, _read_rows(conn, collection_id))


def _version_of(chunks: CollectionRows) -> tuple[int, int]:
    return chunks.collection_id, chunks.version


@contextlib.contextmanager
def _read_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction, so a version and the rows it describes agree."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _read_rows(conn: sqlite3.Connection, collection_id: int) -> CollectionRows:
    (version,) = conn.execute(
        "SELECT version FROM collections WHERE id = ?", (collection_id,)
    ).fetchone()
    docs = conn.execute(
        "SELECT id, metadata FROM documents WHERE collection_id = ? ORDER BY id",
        (collection_id,),
    ).fetchall()
    rows = conn.execute(
        "SELECT id, document_id FROM chunks WHERE collection_id = ? ORDER BY id",
        (collection_id,),
    ).fetchall()
    position = {doc_row: i for i, (doc_row, _) in enumerate(docs)}
    keys = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    doc_rows = np.fromiter((position[r[1]] for r in rows), dtype=np.int64, count=len(rows))
    return CollectionRows(
        collection_id, int(version), keys, doc_rows, [json.loads(m) for _, m in docs]
    )
