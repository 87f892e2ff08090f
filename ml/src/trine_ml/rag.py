"""Retrieval-augmented answering over inline documents."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from trine_ml.embedding import AsyncEmbedder
from trine_ml.providers.base import Answer, LLMProvider, Passage
from trine_ml.ranking import rank

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RagResult:
    answer: Answer
    passages: list[Passage]


class RagService:
    """Embeds the query and documents (through the cache), ranks the documents and asks the
    provider for an answer from the best ``top_k``."""

    def __init__(self, embedder: AsyncEmbedder, provider: LLMProvider) -> None:
        self.embedder = embedder
        self.provider = provider

    async def query(self, query: str, documents: Sequence[str], top_k: int) -> RagResult:
        started = time.perf_counter()
        vectors = await self.embedder.embed([query, *documents])
        embedded = time.perf_counter()
        hits = rank(vectors[0], vectors[1:], top_k)
        passages = [Passage(index=h.index, score=h.score, text=documents[h.index]) for h in hits]
        answer = await self.provider.answer(query, passages)
        logger.info(
            "rag query answered",
            extra={
                "event": "rag_query",
                "documents": len(documents),
                "top_k": len(passages),
                "provider": answer.provider,
                "embed_ms": round((embedded - started) * 1000, 2),
                "answer_ms": round((time.perf_counter() - embedded) * 1000, 2),
            },
        )
        return RagResult(answer=answer, passages=passages)
