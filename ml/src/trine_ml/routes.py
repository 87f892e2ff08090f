"""HTTP routes. Thin: validation is in the schemas, work is in :class:`RagService`."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from pydantic import ValidationError

from trine_ml.errors import InvalidRequest, Unauthorized, invalid_request_from
from trine_ml.rag import RagService
from trine_ml.schemas import (
    ErrorEnvelope,
    Health,
    PassageOut,
    RagQueryRequest,
    RagQueryResponse,
    Usage,
)
from trine_ml.settings import Settings

INTERNAL_TOKEN_HEADER = "X-Trine-Internal-Token"


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_rag_service(request: Request) -> RagService:
    service: RagService = request.app.state.rag
    return service


SettingsDep = Annotated[Settings, Depends(get_settings)]
RagServiceDep = Annotated[RagService, Depends(get_rag_service)]


def require_internal_token(
    settings: SettingsDep,
    token: Annotated[str | None, Header(alias=INTERNAL_TOKEN_HEADER)] = None,
) -> None:
    """Admits only callers that present the shared internal credential."""
    expected = settings.internal_token.get_secret_value().encode()
    if token is None or not hmac.compare_digest(token.encode(), expected):
        raise Unauthorized(f"missing or invalid {INTERNAL_TOKEN_HEADER}")


InternalCaller = Annotated[None, Depends(require_internal_token)]


async def parse_rag_query(_: InternalCaller, request: Request) -> RagQueryRequest:
    """Reads the body only once the caller is authenticated, so an unauthenticated caller
    always gets 401, whatever it sent (FastAPI would parse a declared body first)."""
    try:
        return RagQueryRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise invalid_request_from(exc.errors(include_input=False)) from None


RagQueryBody = Annotated[RagQueryRequest, Depends(parse_rag_query)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in [
        (400, "Invalid request"),
        (401, "Missing or wrong internal token"),
        (502, "The LLM provider failed"),
        (504, "The LLM provider timed out"),
    ]
}

health_router = APIRouter()
rag_router = APIRouter()


@health_router.get("/healthz", response_model=Health)
async def healthz(settings: SettingsDep) -> Health:
    """Liveness; answers only once the model is loaded. Needs no credential."""
    return Health(status="ok", service_id=settings.service_id)


@rag_router.post("/rag/query", response_model=RagQueryResponse, responses=_ERRORS)
async def rag_query(
    body: RagQueryBody, rag: RagServiceDep, settings: SettingsDep
) -> RagQueryResponse:
    """Answers a question from inline documents, citing them."""
    if body.documents is None:
        if body.collection is not None:
            raise InvalidRequest("collections are not available yet")
        raise InvalidRequest("documents: field required")
    result = await rag.query(body.query, body.documents, body.top_k)
    answer = result.answer
    return RagQueryResponse(
        answer=answer.text,
        sources=[p.index for p in result.passages],
        passages=[PassageOut(index=p.index, score=p.score, text=p.text) for p in result.passages],
        provider=answer.provider,
        model=answer.model,
        usage=Usage(input_tokens=answer.input_tokens, output_tokens=answer.output_tokens),
        service_id=settings.service_id,
    )
