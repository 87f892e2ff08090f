"""The ML work behind the routes, built once per process: the embedding model, the
collections store, the chunker and the LLM provider. The HTTP app and the job worker both
open them here, so a job runs exactly the code its synchronous route runs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from trine_ml.chunking import TokenChunker
from trine_ml.collection_service import CollectionService
from trine_ml.embedding import AsyncEmbedder, Embedder, OpenVinoEmbedder
from trine_ml.providers.anthropic import AnthropicProvider
from trine_ml.providers.base import LLMProvider
from trine_ml.providers.extractive import ExtractiveProvider
from trine_ml.providers.openai import OpenAIProvider
from trine_ml.rag import RagService
from trine_ml.settings import Settings
from trine_ml.store.base import VectorStore
from trine_ml.store.postgres import PostgresVectorStore
from trine_ml.store.sqlite import SQLiteVectorStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    collections: CollectionService
    rag: RagService
    provider: LLMProvider


def build_provider(settings: Settings, embedder: AsyncEmbedder) -> LLMProvider:
    if settings.resolved_provider == "openai":
        return OpenAIProvider.create(
            api_key=(
                settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
            ),
            base_url=settings.openai_base_url,
            model=settings.openai_model,
            max_tokens=settings.llm_max_tokens,
            timeout_s=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
        )
    if settings.resolved_provider == "anthropic":
        assert settings.anthropic_api_key is not None  # enforced by Settings
        return AnthropicProvider.create(
            api_key=settings.anthropic_api_key.get_secret_value(),
            base_url=settings.anthropic_base_url,
            model=settings.anthropic_model,
            max_tokens=settings.llm_max_tokens,
            timeout_s=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
        )
    return ExtractiveProvider(embedder)


async def open_store(settings: Settings, dimension: int) -> VectorStore:
    """The collections store the settings choose: PostgreSQL when ``DATABASE_URL`` is set,
    else the SQLite file."""
    if settings.database_url is not None:
        postgres = PostgresVectorStore(
            settings.database_url.get_secret_value(),
            dimension=dimension,
            pool_size=settings.database_pool_size,
            pool_timeout_s=settings.database_timeout_s,
            ef_search=settings.hnsw_ef_search,
        )
        await postgres.open()
        # The URL may carry a password: it is not logged.
        logger.info("collections store open", extra={"event": "store_open", "backend": "postgres"})
        return postgres
    loop = asyncio.get_running_loop()
    sqlite = await loop.run_in_executor(
        None, lambda: SQLiteVectorStore(settings.database_path, dimension=dimension)
    )
    logger.info(
        "collections store open",
        extra={"event": "store_open", "backend": "sqlite", "path": str(settings.database_path)},
    )
    return sqlite


@asynccontextmanager
async def open_services(
    settings: Settings, *, embedder: Embedder | None = None, store: VectorStore | None = None
) -> AsyncIterator[Services]:
    """Loads the model and opens the store; closes what it opened on exit. Pass ``embedder``
    to reuse an already loaded model and ``store`` to use another backend (tests do)."""
    # One worker thread: model runs are serialised, so concurrent requests queue for the
    # model instead of oversubscribing the cores (OpenVINO gets embed_threads itself).
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
    try:
        loop = asyncio.get_running_loop()
        model = embedder
        if model is None:
            started = time.perf_counter()
            model = await loop.run_in_executor(
                executor,
                lambda: OpenVinoEmbedder.from_packages(
                    threads=settings.embed_threads, batch_size=settings.embed_batch_size
                ),
            )
            logger.info(
                "embedding model loaded",
                extra={
                    "event": "model_loaded",
                    "model": model.model_id,
                    "threads": settings.embed_threads,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
        async_embedder = AsyncEmbedder(model, executor, settings.embed_cache_size)
        chunker = await loop.run_in_executor(
            executor,
            lambda: TokenChunker.from_packages(
                target_tokens=settings.chunk_tokens,
                overlap_tokens=settings.chunk_overlap_tokens,
            ),
        )
        vector_store = store if store is not None else await open_store(settings, model.dimension)
        # Chunking shares the model's thread: both are CPU-bound, and the cores are few.
        collections = CollectionService(
            vector_store,
            async_embedder,
            chunker,
            executor,
            batch_chunks=settings.ingest_batch_chunks,
        )
        provider = build_provider(settings, async_embedder)
        try:
            yield Services(collections, RagService(async_embedder, provider, collections), provider)
        finally:
            await provider.aclose()
            if store is None:
                await vector_store.aclose()
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
