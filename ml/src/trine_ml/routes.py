"""HTTP routes of RAG and health. Thin: validation is in the schemas, work is in
:class:`RagService`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from trine_ml.dependencies import (
    Deadline,
    InternalCaller,
    RagServiceDep,
    SettingsDep,
    ValidateOnly,
)
from trine_ml.errors import InvalidRequest, UpstreamError, UpstreamTimeout, invalid_request_from
from trine_ml.providers.base import Answer
from trine_ml.rag import RagService, Retrieval, response_body
from trine_ml.schemas import (
    CollectionQueryResponse,
    ErrorEnvelope,
    Health,
    RagQueryRequest,
    RagQueryResponse,
)
from trine_ml.sse import answer_events

T = TypeVar("T")


async def parse_rag_query(_: InternalCaller, request: Request) -> RagQueryRequest:
    """Reads the body only once the caller is authenticated, so an unauthenticated caller
    always gets 401, whatever it sent (FastAPI would parse a declared body first)."""
    try:
        return RagQueryRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise invalid_request_from(exc.errors(include_input=False)) from None


RagQueryBody = Annotated[RagQueryRequest, Depends(parse_rag_query)]

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in [
        (400, "Invalid request"),
        (401, "Missing or wrong internal token"),
        (404, "Unknown collection"),
        (502, "The LLM provider failed"),
        (504, "The LLM provider or the caller's deadline timed out"),
    ]
}

health_router = APIRouter()
rag_router = APIRouter()


async def within(deadline: float | None, work: Awaitable[T]) -> T:
    """Awaits ``work``, giving up when the gateway's deadline passes: an answer it would
    throw away is not worth the model time."""
    if deadline is None:
        return await work
    try:
        async with asyncio.timeout(deadline):
            return await work
    except TimeoutError:
        raise UpstreamTimeout("the request's deadline passed before the answer was ready") from None


@health_router.get("/healthz", response_model=Health)
async def healthz(settings: SettingsDep) -> Health:
    """Liveness; answers only once the model is loaded. Needs no credential."""
    return Health(status="ok", service_id=settings.service_id)


@rag_router.post(
    "/rag/query",
    response_model=RagQueryResponse | CollectionQueryResponse,
    responses=ERRORS,
)
async def rag_query(
    body: RagQueryBody,
    rag: RagServiceDep,
    settings: SettingsDep,
    deadline: Deadline,
    validate_only: ValidateOnly,
) -> RagQueryResponse | CollectionQueryResponse | Response:
    """Answers a question from inline documents or a stored collection, citing them."""
    check_rag_query(body)
    if validate_only:
        return Response(status_code=204)
    if not body.stream:
        retrieval, answer = await within(deadline, retrieve_and_answer(rag, body))
        return response_body(retrieval, answer, settings.service_id)
    retrieval = await within(deadline, rag.retrieve(body))
    events = rag.stream(body, retrieval)
    # The first piece is awaited here, so a provider that fails at once gets a real status.
    first = await within(deadline, _first(events))
    return StreamingResponse(
        answer_events(
            retrieval.public,
            first,
            events,
            lambda answer: response_body(retrieval, answer, settings.service_id),
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def check_rag_query(body: RagQueryRequest) -> None:
    """The checks beyond the schema, before any work (shared with validate-only and jobs)."""
    if body.documents is None and body.collection is None:
        raise InvalidRequest("documents: field required (or give a collection)")


async def retrieve_and_answer(rag: RagService, body: RagQueryRequest) -> tuple[Retrieval, Answer]:
    retrieval = await rag.retrieve(body)
    return retrieval, await rag.answer(body, retrieval)


async def _first(events: AsyncIterator[str | Answer]) -> str | Answer:
    try:
        return await anext(events)
    except StopAsyncIteration:
        raise UpstreamError("the LLM provider ended without an answer") from None
