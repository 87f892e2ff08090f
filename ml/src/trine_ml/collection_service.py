"""Stored collections: ingest (chunk, embed, store in bounded batches) and retrieval
(dense, keyword, or both fused)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Literal

from trine_ml.chunking import TokenChunker
from trine_ml.embedding import AsyncEmbedder
from trine_ml.store.base import (
    ChunkInput,
    DocumentInput,
    MetadataFilter,
    ScoredChunk,
    StoredChunk,
    VectorStore,
)

logger = logging.getLogger(__name__)

SearchMode = Literal["dense", "keyword", "hybrid"]

#: Reciprocal rank fusion constant; 60 is the value from Cormack et al. and the usual default.
RRF_K = 60
#: How deep each ranking goes before fusion.
HYBRID_CANDIDATES = 100


@dataclass(frozen=True, slots=True)
class NewDocument:
    text: str
    id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IngestResult:
    documents: int
    chunks: int


@dataclass(frozen=True, slots=True)
class RetrievedChunk:
    chunk: StoredChunk
    score: float


def reciprocal_rank_fusion(rankings: Sequence[Sequence[ScoredChunk]], k: int) -> list[ScoredChunk]:
    """Fuses rankings by summing ``1 / (RRF_K + rank)``; scores of different scales (cosine,
    BM25) need no calibration. Ties keep the order of first appearance."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            fused[hit.key] = fused.get(hit.key, 0.0) + 1.0 / (RRF_K + rank)
    best = sorted(fused.items(), key=lambda item: -item[1])[:k]
    return [ScoredChunk(key, score) for key, score in best]


class CollectionService:
    def __init__(
        self,
        store: VectorStore,
        embedder: AsyncEmbedder,
        chunker: TokenChunker,
        cpu_executor: Executor,
        *,
        batch_chunks: int,
    ) -> None:
        self.store = store
        self._embedder = embedder
        self._chunker = chunker
        self._cpu = cpu_executor
        self._batch_chunks = batch_chunks

    async def ingest(self, collection: str, documents: Sequence[NewDocument]) -> IngestResult:
        """Chunks and embeds the documents and stores them, replacing documents with the same
        ids. Work goes in batches of about ``batch_chunks`` chunks, each written in its own
        transaction, so memory stays bounded whatever the request's size; a failure part-way
        leaves the earlier batches stored (re-posting is safe: ids replace)."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        pending: list[tuple[NewDocument, str, list[str]]] = []
        pending_chunks = total_chunks = 0
        for doc in documents:
            texts = await loop.run_in_executor(self._cpu, self._chunker.chunk, doc.text)
            pending.append((doc, doc.id or uuid.uuid4().hex, texts))
            pending_chunks += len(texts)
            if pending_chunks >= self._batch_chunks:
                await self._write(collection, pending)
                total_chunks += pending_chunks
                pending, pending_chunks = [], 0
        if pending:
            await self._write(collection, pending)
            total_chunks += pending_chunks
        logger.info(
            "documents ingested",
            extra={
                "event": "ingest",
                "collection": collection,
                "documents": len(documents),
                "chunks": total_chunks,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return IngestResult(len(documents), total_chunks)

    async def _write(
        self, collection: str, batch: Sequence[tuple[NewDocument, str, list[str]]]
    ) -> None:
        texts = [text for _, _, chunks in batch for text in chunks]
        vectors = await self._embedder.embed_uncached(texts)
        stored: list[DocumentInput] = []
        row = 0
        for doc, doc_id, chunks in batch:
            parts = [ChunkInput(text, vectors[row + i]) for i, text in enumerate(chunks)]
            row += len(chunks)
            stored.append(DocumentInput(doc_id, doc.text, doc.metadata, parts))
        await self.store.upsert(collection, stored)

    async def retrieve(
        self,
        collection: str,
        query: str,
        top_k: int,
        *,
        mode: SearchMode = "hybrid",
        metadata_filter: MetadataFilter | None = None,
    ) -> list[RetrievedChunk]:
        """The ``top_k`` best chunks, best first. Scores: cosine (dense), negated BM25
        (keyword) or the fused reciprocal-rank score (hybrid)."""
        hits: list[ScoredChunk]
        if mode == "keyword":
            hits = await self.store.keyword_search(collection, query, top_k, metadata_filter)
        else:
            vector = (await self._embedder.embed([query]))[0]
            if mode == "dense":
                hits = await self.store.dense_search(collection, vector, top_k, metadata_filter)
            else:
                depth = max(HYBRID_CANDIDATES, top_k)
                dense, keyword = await asyncio.gather(
                    self.store.dense_search(collection, vector, depth, metadata_filter),
                    self.store.keyword_search(collection, query, depth, metadata_filter),
                )
                hits = reciprocal_rank_fusion([dense, keyword], top_k)
        chunks = await self.store.fetch_chunks(collection, [h.key for h in hits])
        scores = {h.key: h.score for h in hits}
        return [RetrievedChunk(c, scores[c.key]) for c in chunks]
