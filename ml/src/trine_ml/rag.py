"""Retrieval-augmented answering, from inline documents or from a stored collection."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from trine_ml.collection_service import CollectionService
from trine_ml.embedding import AsyncEmbedder
from trine_ml.providers.base import Answer, LLMProvider, Passage
from trine_ml.ranking import rank
from trine_ml.schemas import (
    CollectionPassageOut,
    CollectionQueryResponse,
    PassageOut,
    RagQueryRequest,
    RagQueryResponse,
    Usage,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Retrieval:
    """What retrieval found: the passages the provider sees (best first) and their public
    form, so the answer's ``[n]`` maps to ``passages[n - 1]`` and ``sources[n - 1]``."""

    passages: list[Passage]
    public: list[PassageOut] | list[CollectionPassageOut]
    from_collection: bool
    ms: float


class RagService:
    """Retrieves passages (inline documents ranked by cosine, or a collection searched by
    the store) and asks the provider for an answer from the best ``top_k``."""

    def __init__(
        self, embedder: AsyncEmbedder, provider: LLMProvider, collections: CollectionService
    ) -> None:
        self.embedder = embedder
        self.provider = provider
        self.collections = collections

    async def retrieve(self, request: RagQueryRequest) -> Retrieval:
        started = time.perf_counter()
        if request.collection is not None:
            hits = await self.collections.retrieve(
                request.collection,
                request.query,
                request.top_k,
                mode=request.mode,
                metadata_filter=request.metadata_filter(),
            )
            passages = [Passage(i, h.score, h.chunk.text) for i, h in enumerate(hits)]
            public: list[PassageOut] | list[CollectionPassageOut] = [
                CollectionPassageOut(
                    document_id=h.chunk.document_id,
                    chunk_id=f"{h.chunk.document_id}#{h.chunk.seq}",
                    metadata=dict(h.chunk.metadata),
                    score=h.score,
                    text=h.chunk.text,
                )
                for h in hits
            ]
        else:
            documents: Sequence[str] = request.documents or []
            vectors = await self.embedder.embed([request.query, *documents])
            ranked = rank(vectors[0], vectors[1:], request.top_k)
            passages = [Passage(h.index, h.score, documents[h.index]) for h in ranked]
            public = [PassageOut(index=p.index, score=p.score, text=p.text) for p in passages]
        return Retrieval(
            passages, public, request.collection is not None, (time.perf_counter() - started) * 1000
        )

    async def answer(self, request: RagQueryRequest, retrieval: Retrieval) -> Answer:
        started = time.perf_counter()
        if not request.generate:
            answer = Answer("", self.provider.name, self.provider.model)
        else:
            answer = await self.provider.answer(request.query, retrieval.passages)
        self._log(request, retrieval, answer, started)
        return answer

    async def stream(
        self, request: RagQueryRequest, retrieval: Retrieval
    ) -> AsyncIterator[str | Answer]:
        started = time.perf_counter()
        if not request.generate:
            yield await self.answer(request, retrieval)
            return
        async for item in self.provider.stream(request.query, retrieval.passages):
            if isinstance(item, Answer):
                self._log(request, retrieval, item, started)
            yield item

    def _log(
        self, request: RagQueryRequest, retrieval: Retrieval, answer: Answer, started: float
    ) -> None:
        logger.info(
            "rag query answered",
            extra={
                "event": "rag_query",
                "collection": request.collection,
                "mode": request.mode if request.collection else None,
                "documents": len(request.documents or []),
                "top_k": len(retrieval.passages),
                "provider": answer.provider,
                "retrieve_ms": round(retrieval.ms, 2),
                "answer_ms": round((time.perf_counter() - started) * 1000, 2),
                "stream": request.stream,
            },
        )


def response_body(
    retrieval: Retrieval, answer: Answer, service_id: str
) -> RagQueryResponse | CollectionQueryResponse:
    """The JSON answer: the response of a plain query, the ``done`` frame of a stream.
    ``sources`` has one entry per passage, so ``[n]`` in the answer is ``sources[n - 1]``."""
    usage = Usage(input_tokens=answer.input_tokens, output_tokens=answer.output_tokens)
    if retrieval.from_collection:
        stored = [p for p in retrieval.public if isinstance(p, CollectionPassageOut)]
        return CollectionQueryResponse(
            answer=answer.text,
            sources=[p.document_id for p in stored],
            passages=stored,
            provider=answer.provider,
            model=answer.model,
            usage=usage,
            service_id=service_id,
        )
    inline = [p for p in retrieval.public if isinstance(p, PassageOut)]
    return RagQueryResponse(
        answer=answer.text,
        sources=[p.index for p in inline],
        passages=inline,
        provider=answer.provider,
        model=answer.model,
        usage=usage,
        service_id=service_id,
    )
