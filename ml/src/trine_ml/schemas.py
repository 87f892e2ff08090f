"""Request and response bodies of the HTTP API (see api/ml.openapi.yaml)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

NonEmptyText = Annotated[str, Field(min_length=1)]


class RagQueryRequest(BaseModel):
    """``POST /rag/query``. Unknown fields (``fanout``, ``stream``, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    query: str = Field(min_length=1, description="The question.")
    documents: list[NonEmptyText] | None = Field(
        default=None, min_length=1, description="Inline documents to retrieve from."
    )
    top_k: int = Field(default=3, ge=1, le=50, description="Passages to keep; capped at the count.")
    collection: str | None = Field(default=None, description="Stored collection (not available).")

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class PassageOut(BaseModel):
    index: int = Field(description="Index of the document in the request's documents.")
    score: float = Field(description="Cosine similarity to the query.")
    text: str


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int


class RagQueryResponse(BaseModel):
    answer: str
    sources: list[int] = Field(description="Document indices, best first.")
    passages: list[PassageOut]
    provider: str
    model: str
    usage: Usage
    service_id: str


class Health(BaseModel):
    status: str
    service_id: str


class ErrorBody(BaseModel):
    type: str
    message: str
    request_id: str | None


class ErrorEnvelope(BaseModel):
    error: ErrorBody
