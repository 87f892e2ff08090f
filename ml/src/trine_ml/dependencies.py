"""Request dependencies shared by the routers: settings, services, the internal credential
and the caller's deadline. Tests swap them with ``app.dependency_overrides``.

They are ``async def`` although none awaits: FastAPI runs a plain ``def`` dependency in its
thread pool, and each such hop costs far more than these few microseconds of work. Keep them
free of blocking calls."""

from __future__ import annotations

import hmac
import re
from typing import Annotated

from fastapi import Depends, Header, Request

from trine_ml.collection_service import CollectionService
from trine_ml.errors import InvalidRequest, Unauthorized
from trine_ml.rag import RagService
from trine_ml.schemas import COLLECTION_NAME
from trine_ml.settings import Settings

INTERNAL_TOKEN_HEADER = "X-Trine-Internal-Token"
DEADLINE_HEADER = "X-Trine-Deadline-Ms"
VALIDATE_ONLY_HEADER = "X-Trine-Validate-Only"
_COLLECTION_NAME = re.compile(COLLECTION_NAME)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_rag_service(request: Request) -> RagService:
    service: RagService = request.app.state.rag
    return service


async def get_collection_service(request: Request) -> CollectionService:
    service: CollectionService = request.app.state.collections
    return service


SettingsDep = Annotated[Settings, Depends(get_settings)]
RagServiceDep = Annotated[RagService, Depends(get_rag_service)]
CollectionServiceDep = Annotated[CollectionService, Depends(get_collection_service)]


async def require_internal_token(
    settings: SettingsDep,
    token: Annotated[str | None, Header(alias=INTERNAL_TOKEN_HEADER)] = None,
) -> None:
    """Admits only callers that present the shared internal credential."""
    expected = settings.internal_token.get_secret_value().encode()
    if token is None or not hmac.compare_digest(token.encode(), expected):
        raise Unauthorized(f"missing or invalid {INTERNAL_TOKEN_HEADER}")


InternalCaller = Annotated[None, Depends(require_internal_token)]


async def deadline_seconds(
    value: Annotated[str | None, Header(alias=DEADLINE_HEADER)] = None,
) -> float | None:
    """The time the gateway still gives this request, if it said; a malformed value is
    ignored rather than failing a request the gateway already accepted."""
    if value is None:
        return None
    try:
        ms = float(value)
    except ValueError:
        return None
    return max(ms, 0.0) / 1000 if ms == ms and ms < 1e9 else None


Deadline = Annotated[float | None, Depends(deadline_seconds)]


async def validate_only(
    value: Annotated[str | None, Header(alias=VALIDATE_ONLY_HEADER)] = None,
) -> bool:
    """``X-Trine-Validate-Only: 1``: the gateway checks a job's input before enqueueing it.
    The route runs every check that could answer 400, then answers 204 and does nothing."""
    return value is not None and value.strip() == "1"


ValidateOnly = Annotated[bool, Depends(validate_only)]


async def collection_name(_: InternalCaller, name: str) -> str:
    """The ``{name}`` path parameter, checked after the credential."""
    if not _COLLECTION_NAME.match(name):
        raise InvalidRequest("collection name must match [a-z0-9][a-z0-9_-]{0,62}")
    return name


CollectionName = Annotated[str, Depends(collection_name)]
