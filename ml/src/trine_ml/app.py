"""Application factory: settings in, a FastAPI app out. Nothing happens at import time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from trine_ml import __version__
from trine_ml.chunking import TokenChunker
from trine_ml.collection_routes import collections_router
from trine_ml.collection_service import CollectionService
from trine_ml.embedding import AsyncEmbedder, Embedder, OnnxEmbedder
from trine_ml.errors import install_error_handlers
from trine_ml.middleware import RequestContextMiddleware
from trine_ml.providers.anthropic import AnthropicProvider
from trine_ml.providers.base import LLMProvider
from trine_ml.providers.extractive import ExtractiveProvider
from trine_ml.providers.openai import OpenAIProvider
from trine_ml.rag import RagService
from trine_ml.routes import health_router, rag_router
from trine_ml.settings import Settings
from trine_ml.store.base import VectorStore
from trine_ml.store.sqlite import SQLiteVectorStore

logger = logging.getLogger(__name__)


def _build_provider(settings: Settings, embedder: AsyncEmbedder) -> LLMProvider:
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


def create_app(
    settings: Settings, *, embedder: Embedder | None = None, store: VectorStore | None = None
) -> FastAPI:
    """Builds the service. The model loads and the database opens during the lifespan,
    before the server accepts requests; pass ``embedder`` to reuse an already loaded model
    and ``store`` to use another backend (tests do)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One worker thread: model runs are serialised, so concurrent requests queue for the
        # model instead of oversubscribing the cores (onnxruntime gets embed_threads itself).
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        try:
            model = embedder
            if model is None:
                started = time.perf_counter()
                model = await asyncio.get_running_loop().run_in_executor(
                    executor,
                    lambda: OnnxEmbedder.from_packages(
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
            loop = asyncio.get_running_loop()
            chunker = await loop.run_in_executor(
                executor,
                lambda: TokenChunker.from_packages(
                    target_tokens=settings.chunk_tokens,
                    overlap_tokens=settings.chunk_overlap_tokens,
                ),
            )
            vector_store = store
            if vector_store is None:
                dimension = model.dimension
                vector_store = await loop.run_in_executor(
                    None, lambda: SQLiteVectorStore(settings.database_path, dimension=dimension)
                )
                logger.info(
                    "collections store open",
                    extra={"event": "store_open", "path": str(settings.database_path)},
                )
            # Chunking shares the model's thread: both are CPU-bound, and the cores are few.
            collections = CollectionService(
                vector_store,
                async_embedder,
                chunker,
                executor,
                batch_chunks=settings.ingest_batch_chunks,
            )
            provider = _build_provider(settings, async_embedder)
            app.state.collections = collections
            app.state.rag = RagService(async_embedder, provider, collections)
            logger.info(
                "ready",
                extra={
                    "event": "ready",
                    "service_id": settings.service_id,
                    "provider": provider.name,
                    "llm_model": provider.model,
                },
            )
            try:
                yield
            finally:
                await provider.aclose()
                if store is None:
                    await vector_store.aclose()
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="trine ML service",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(rag_router)
    app.include_router(collections_router)
    app.add_middleware(RequestContextMiddleware)
    return app
