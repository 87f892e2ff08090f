"""Application factory: settings in, a FastAPI app out. Nothing happens at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from trine_ml import __version__
from trine_ml.collection_routes import collections_router
from trine_ml.embedding import Embedder
from trine_ml.errors import install_error_handlers
from trine_ml.middleware import RequestContextMiddleware
from trine_ml.routes import health_router, rag_router
from trine_ml.services import open_services
from trine_ml.settings import Settings
from trine_ml.store.base import VectorStore

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings, *, embedder: Embedder | None = None, store: VectorStore | None = None
) -> FastAPI:
    """Builds the service. The model loads and the database opens during the lifespan,
    before the server accepts requests; pass ``embedder`` to reuse an already loaded model
    and ``store`` to use another backend (tests do)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(settings, embedder=embedder, store=store) as services:
            app.state.collections = services.collections
            app.state.rag = services.rag
            logger.info(
                "ready",
                extra={
                    "event": "ready",
                    "service_id": settings.service_id,
                    "provider": services.provider.name,
                    "llm_model": services.provider.model,
                },
            )
            yield

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
