"""The shared store: PostgreSQL with pgvector, for ML replicas on several machines.

Chunks hold their vector in a ``vector(N)`` column under an HNSW index (cosine), their text
in a generated ``tsvector`` column under a GIN index, and their document's metadata as
``jsonb``, so dense search, keyword search and filters all run in SQL. Connections come
from an async pool; each new connection first makes sure the schema is migrated, so a
replica that started while the database was down catches up when it is back. While the
database cannot be reached, every call raises :class:`~trine_ml.errors.Unavailable`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector.psycopg import register_vector_async
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from trine_ml.errors import NotFound, Unavailable
from trine_ml.store.base import (
    CollectionStats,
    DocumentInput,
    MetadataFilter,
    ScoredChunk,
    StoredChunk,
)
from trine_ml.store.keyword import content_words
from trine_ml.store.postgres_schema import SchemaMismatch, migrate

__all__ = ["PostgresVectorStore", "SchemaMismatch"]

logger = logging.getLogger(__name__)

# Keyword queries keep this many distinct words; longer queries are cut.
MAX_QUERY_WORDS = 32
# Upper bound of hnsw.ef_search (pgvector refuses more than 1000).
MAX_EF_SEARCH = 1000

_UNAVAILABLE = "the collections database is unavailable; retry later"

Conn = AsyncConnection[TupleRow]


class PostgresVectorStore:
    """:class:`~trine_ml.store.base.VectorStore` on PostgreSQL + pgvector. Build it, then
    ``await open()``; ``aclose()`` closes the pool."""

    def __init__(
        self,
        conninfo: str,
        *,
        dimension: int,
        pool_size: int = 4,
        pool_timeout_s: float = 5.0,
        ef_search: int = 200,
    ) -> None:
        self._dimension = dimension
        self._ef_search = ef_search
        self._schema_ready = False
        self._conninfo = conninfo
        # libpq counts connect_timeout in whole seconds and treats under 2 as 2.
        self._connect_timeout = max(2, round(pool_timeout_s))
        self._pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            timeout=pool_timeout_s,
            open=False,
            name="trine-ml",
            kwargs={"autocommit": True, "connect_timeout": self._connect_timeout},
            configure=self._configure,
            # A connection that died with the server is found and replaced before a query
            # uses it, so a restarted database costs no failed request once it is back.
            check=AsyncConnectionPool.check_connection,
            # Give up a background reconnection soon: while the database is away each
            # request starts a fresh attempt, so recovery does not wait out a long backoff.
            reconnect_timeout=pool_timeout_s,
        )

    async def open(self) -> None:
        """Migrates the schema, then opens the pool. An unreachable database is logged, not
        raised: the replica serves 503 ``unavailable`` and migrates when it comes back. A
        schema this replica cannot use raises :class:`SchemaMismatch`."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=self._connect_timeout
            )
        except psycopg.OperationalError as exc:
            logger.warning(
                "collections database unavailable at start; will retry",
                extra={"event": "store_unavailable", "error": type(exc).__name__},
            )
        else:
            async with conn:
                await self._configure(conn)
        await self._pool.open(wait=False)

    async def _configure(self, conn: Conn) -> None:
        # Runs on every new connection: migrations first, since the vector type the
        # adapters need may not exist before them.
        if not self._schema_ready:
            if await migrate(conn, self._dimension):
                logger.info("schema up to date", extra={"event": "schema_ready"})
            self._schema_ready = True
        await register_vector_async(conn)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            logger.warning(
                "collections database call failed",
                extra={"event": "store_unavailable", "error": type(exc).__name__},
            )
            raise Unavailable(_UNAVAILABLE, headers={"Retry-After": "1"}) from exc

    # Writes ---------------------------------------------------------------------------

    async def upsert(self, collection: str, documents: Sequence[DocumentInput]) -> None:
        # The last of several documents with one id wins, as if stored one after another.
        latest = {doc.id: doc for doc in documents}
        for doc in latest.values():
            for chunk in doc.chunks:
                self._check_vector(chunk.vector)
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO ml_collections (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                (collection,),
            )
            # FOR SHARE: a concurrent delete of the collection waits for this transaction.
            cid = await _scalar(
                conn, "SELECT id FROM ml_collections WHERE name = %s FOR SHARE", (collection,)
            )
            if not latest:
                return
            async with conn.cursor() as cur:
                # Insert-or-update locks each document row, so concurrent replacements of
                # one id queue up instead of colliding on the unique key.
                await cur.executemany(
                    "INSERT INTO ml_documents (collection_id, doc_id, text, metadata)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (collection_id, doc_id)"
                    " DO UPDATE SET text = EXCLUDED.text, metadata = EXCLUDED.metadata"
                    " RETURNING id",
                    [(cid, d.id, d.text, Jsonb(dict(d.metadata))) for d in latest.values()],
                    returning=True,
                )
                rows: list[int] = []
                while True:
                    row = await cur.fetchone()
                    assert row is not None
                    rows.append(int(row[0]))
                    if not cur.nextset():
                        break
                await cur.execute("DELETE FROM ml_chunks WHERE document_id = ANY(%s)", (rows,))
                async with cur.copy(
                    "COPY ml_chunks (collection_id, document_id, seq, text, metadata, embedding)"
                    " FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["int8", "int8", "int4", "text", "jsonb", "vector"])
                    for doc_row, doc in zip(rows, latest.values(), strict=True):
                        metadata = Jsonb(dict(doc.metadata))
                        for seq, chunk in enumerate(doc.chunks):
                            await copy.write_row(
                                (cid, doc_row, seq, chunk.text, metadata, chunk.vector)
                            )

    async def delete_document(self, collection: str, document_id: str) -> bool:
        async with self._connection() as conn:
            cur = await conn.execute(
                "DELETE FROM ml_documents d USING ml_collections c"
                " WHERE d.collection_id = c.id AND c.name = %s AND d.doc_id = %s",
                (collection, document_id),
            )
            return cur.rowcount > 0

    async def delete_collection(self, collection: str) -> bool:
        async with self._connection() as conn:
            cur = await conn.execute("DELETE FROM ml_collections WHERE name = %s", (collection,))
            return cur.rowcount > 0

    # Reads ----------------------------------------------------------------------------

    async def list_collections(self) -> list[CollectionStats]:
        return await self._stats(None)

    async def get_collection(self, collection: str) -> CollectionStats | None:
        found = await self._stats(collection)
        return found[0] if found else None

    async def _stats(self, name: str | None) -> list[CollectionStats]:
        query = (
            "SELECT name,"
            " (SELECT count(*) FROM ml_documents d WHERE d.collection_id = c.id),"
            " (SELECT count(*) FROM ml_chunks k WHERE k.collection_id = c.id)"
            " FROM ml_collections c WHERE %(name)s::text IS NULL OR name = %(name)s"
            ' ORDER BY name COLLATE "C"'
        )
        async with self._connection() as conn:
            cur = await conn.execute(query, {"name": name})
            return [CollectionStats(n, int(d), int(k)) for n, d, k in await cur.fetchall()]

    async def dense_search(
        self,
        collection: str,
        vector: npt.NDArray[np.float32],
        k: int,
        metadata_filter: MetadataFilter | None = None,
    ) -> list[ScoredChunk]:
        self._check_vector(vector)
        where, params = _filter_sql(metadata_filter)
        # Iterative scans let HNSW keep walking until k rows pass the collection and
        # metadata conditions; relaxed order is then re-sorted by the outer query.
        query = sql.SQL(
            "WITH hits AS MATERIALIZED ("
            " SELECT id, embedding <=> %s AS distance FROM ml_chunks"
            " WHERE collection_id = %s{where} ORDER BY embedding <=> %s LIMIT %s)"
            " SELECT id, 1 - distance FROM hits ORDER BY distance, id"
        ).format(where=where)
        ef_search = str(min(max(self._ef_search, k), MAX_EF_SEARCH))
        async with self._connection() as conn, conn.transaction():
            cid = await _scalar(
                conn,
                "SELECT id, set_config('hnsw.ef_search', %s, true),"
                " set_config('hnsw.iterative_scan', 'relaxed_order', true)"
                " FROM ml_collections WHERE name = %s",
                (ef_search, collection),
                missing=collection,
            )
            cur = await conn.execute(query, (vector, cid, *params, vector, k))
            return [ScoredChunk(int(key), float(score)) for key, score in await cur.fetchall()]

    async def keyword_search(
        self, collection: str, query: str, k: int, metadata_filter: MetadataFilter | None = None
    ) -> list[ScoredChunk]:
        words = content_words(query)[:MAX_QUERY_WORDS]
        # Each word is its own parameter, parsed by plainto_tsquery and ORed with ||:
        # the SQL text depends only on how many words there are.
        any_word = sql.SQL(" || ").join([sql.SQL("plainto_tsquery('english', %s)")] * len(words))
        where, params = _filter_sql(metadata_filter)
        async with self._connection() as conn:
            row = await _row(
                conn,
                sql.SQL("SELECT id, ({})::text FROM ml_collections WHERE name = %s").format(
                    any_word if words else sql.SQL("''::tsquery")
                ),
                (*words, collection),
                missing=collection,
            )
            cid, tsquery = row
            if not tsquery:  # no words, or only words the dictionary ignores
                return []
            cur = await conn.execute(
                sql.SQL(
                    "SELECT id, ts_rank_cd(tsv, %s::tsquery) AS rank FROM ml_chunks"
                    " WHERE collection_id = %s AND tsv @@ %s::tsquery{where}"
                    " ORDER BY rank DESC, id LIMIT %s"
                ).format(where=where),
                (tsquery, cid, tsquery, *params, k),
            )
            return [ScoredChunk(int(key), float(rank)) for key, rank in await cur.fetchall()]

    async def fetch_chunks(self, collection: str, keys: Sequence[int]) -> list[StoredChunk]:
        if not keys:
            return []
        async with self._connection() as conn:
            cid = await _scalar(
                conn,
                "SELECT id FROM ml_collections WHERE name = %s",
                (collection,),
                missing=collection,
            )
            cur = await conn.execute(
                "SELECT c.id, d.doc_id, c.seq, c.text, c.metadata FROM ml_chunks c"
                " JOIN ml_documents d ON d.id = c.document_id"
                " WHERE c.collection_id = %s AND c.id = ANY(%s)",
                (cid, [int(key) for key in keys]),
            )
            by_key = {
                row[0]: StoredChunk(row[0], row[1], row[2], row[3], row[4])
                for row in await cur.fetchall()
            }
        return [by_key[key] for key in keys if key in by_key]

    async def aclose(self) -> None:
        await self._pool.close()

    def _check_vector(self, vector: npt.NDArray[np.float32]) -> None:
        if vector.shape != (self._dimension,):
            raise ValueError(f"vector has shape {vector.shape}, expected ({self._dimension},)")
        if not np.isfinite(vector).all():
            raise ValueError("vector has non-finite components")


def _filter_sql(metadata_filter: MetadataFilter | None) -> tuple[sql.Composed, list[Any]]:
    """``AND``-ed conditions on the chunk's ``metadata`` and their parameters. Keys and
    values are parameters; values compare as JSON, so ``2020`` matches ``2020`` but not
    ``"2020"`` or ``true``."""
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    for key, condition in (metadata_filter or {}).items():
        if isinstance(condition, Mapping):
            clauses.append(sql.SQL(" AND metadata -> %s IN (SELECT jsonb_array_elements(%s))"))
            params += [key, Jsonb(list(condition["in"]))]
        else:
            clauses.append(sql.SQL(" AND metadata -> %s = %s"))
            params += [key, Jsonb(condition)]
    return sql.Composed(clauses), params


async def _row(
    conn: Conn,
    query: str | sql.SQL | sql.Composed,
    params: Sequence[Any],
    *,
    missing: str | None = None,
) -> tuple[Any, ...]:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"collection {missing!r} does not exist")
    return row


async def _scalar(
    conn: Conn,
    query: str | sql.SQL | sql.Composed,
    params: Sequence[Any],
    *,
    missing: str | None = None,
) -> int:
    return int((await _row(conn, query, params, missing=missing))[0])
