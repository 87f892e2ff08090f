"""Request and response bodies of the HTTP API (see api/ml.openapi.yaml)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NonEmptyText = Annotated[str, Field(min_length=1)]
COLLECTION_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
CollectionName = Annotated[str, Field(pattern=COLLECTION_NAME)]
FilterValue = str | int | float | bool


class InCondition(BaseModel):
    """``{"in": [...]}``: the metadata value is one of these."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    values: list[FilterValue] = Field(alias="in", min_length=1, max_length=1000)


FilterKey = Annotated[str, Field(min_length=1, max_length=128)]


class RagQueryRequest(BaseModel):
    """``POST /rag/query``. Unknown fields (``fanout``, ``stream``, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    query: str = Field(min_length=1, description="The question.")
    documents: list[NonEmptyText] | None = Field(
        default=None, min_length=1, description="Inline documents to retrieve from."
    )
    top_k: int = Field(default=3, ge=1, le=50, description="Passages to keep; capped at the count.")
    collection: CollectionName | None = Field(default=None, description="Stored collection.")
    filter: dict[FilterKey, FilterValue | InCondition] | None = Field(
        default=None, description="Metadata conditions, all of which must hold (collections)."
    )
    mode: Literal["dense", "keyword", "hybrid"] = "hybrid"
    stream: bool = False
    generate: bool = Field(
        default=True, description="false: retrieval only; no LLM call and an empty answer."
    )

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> RagQueryRequest:
        if self.documents is not None and self.collection is not None:
            raise ValueError("give either documents or collection, not both")
        return self

    def metadata_filter(self) -> dict[str, Any] | None:
        """The filter as plain JSON values, the form stores take."""
        if not self.filter:
            return None
        return {
            key: {"in": cond.values} if isinstance(cond, InCondition) else cond
            for key, cond in self.filter.items()
        }


class PassageOut(BaseModel):
    index: int = Field(description="Index of the document in the request's documents.")
    score: float = Field(description="Cosine similarity to the query.")
    text: str


class CollectionPassageOut(BaseModel):
    document_id: str
    chunk_id: str = Field(description="``<document_id>#<n>``: the n-th chunk of the document.")
    metadata: dict[str, Any]
    score: float = Field(description="Cosine (dense), negated BM25 (keyword) or RRF (hybrid).")
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


class CollectionQueryResponse(BaseModel):
    answer: str
    sources: list[str] = Field(description="Document ids, best passage first.")
    passages: list[CollectionPassageOut]
    provider: str
    model: str
    usage: Usage
    service_id: str


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, min_length=1, max_length=512)
    text: NonEmptyText
    metadata: dict[FilterKey, Any] = Field(default_factory=dict)


class IngestRequest(BaseModel):
    documents: list[DocumentIn] = Field(min_length=1)


class IngestResponse(BaseModel):
    collection: str
    documents: int = Field(description="Documents stored by this request.")
    chunks: int = Field(description="Chunks stored by this request.")


class CollectionOut(BaseModel):
    name: str
    documents: int
    chunks: int


class CollectionList(BaseModel):
    collections: list[CollectionOut]


class Health(BaseModel):
    status: str
    service_id: str


class ErrorBody(BaseModel):
    type: str
    message: str
    request_id: str | None


class ErrorEnvelope(BaseModel):
    error: ErrorBody
