"""HTTP routes of stored collections. Thin: work is in :class:`CollectionService`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from trine_ml.collection_service import NewDocument
from trine_ml.dependencies import (
    CollectionName,
    CollectionServiceDep,
    InternalCaller,
    ValidateOnly,
)
from trine_ml.errors import NotFound, invalid_request_from
from trine_ml.routes import ERRORS
from trine_ml.schemas import CollectionList, CollectionOut, IngestRequest, IngestResponse

collections_router = APIRouter(prefix="/collections")


async def parse_ingest(_: InternalCaller, request: Request) -> IngestRequest:
    """Validated after the credential, as for queries."""
    try:
        return IngestRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise invalid_request_from(exc.errors(include_input=False)) from None


IngestBody = Annotated[IngestRequest, Depends(parse_ingest)]


@collections_router.post("/{name}/documents", response_model=IngestResponse, responses=ERRORS)
async def ingest(
    name: CollectionName,
    body: IngestBody,
    collections: CollectionServiceDep,
    validate_only: ValidateOnly,
) -> IngestResponse | Response:
    """Chunks, embeds and stores documents; a document with a known id replaces it.
    Validate-only: 204 once the name and body are valid, and nothing stored."""
    if validate_only:
        return Response(status_code=204)
    documents = [NewDocument(d.text, d.id, d.metadata) for d in body.documents]
    result = await collections.ingest(name, documents)
    return IngestResponse(collection=name, documents=result.documents, chunks=result.chunks)


@collections_router.get("", response_model=CollectionList, responses=ERRORS)
async def list_collections(_: InternalCaller, collections: CollectionServiceDep) -> CollectionList:
    stats = await collections.store.list_collections()
    return CollectionList(
        collections=[
            CollectionOut(name=s.name, documents=s.documents, chunks=s.chunks) for s in stats
        ]
    )


@collections_router.get("/{name}", response_model=CollectionOut, responses=ERRORS)
async def get_collection(name: CollectionName, collections: CollectionServiceDep) -> CollectionOut:
    stats = await collections.store.get_collection(name)
    if stats is None:
        raise NotFound(f"collection {name!r} does not exist")
    return CollectionOut(name=stats.name, documents=stats.documents, chunks=stats.chunks)


@collections_router.delete("/{name}", status_code=204, responses=ERRORS)
async def delete_collection(name: CollectionName, collections: CollectionServiceDep) -> Response:
    if not await collections.store.delete_collection(name):
        raise NotFound(f"collection {name!r} does not exist")
    return Response(status_code=204)


# ":path": an id may hold an escaped "/", which arrives decoded.
@collections_router.delete(
    "/{name}/documents/{document_id:path}", status_code=204, responses=ERRORS
)
async def delete_document(
    name: CollectionName, document_id: str, collections: CollectionServiceDep
) -> Response:
    if not await collections.store.delete_document(name, document_id):
        raise NotFound(f"document {document_id!r} is not in collection {name!r}")
    return Response(status_code=204)
