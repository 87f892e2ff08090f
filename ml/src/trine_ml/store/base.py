"""The interface every collection store implements, and the metadata filter both search
paths apply."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

#: A metadata value a filter can compare against.
Scalar = str | int | float | bool

#: ``{"key": value}`` (equality) or ``{"key": {"in": [v1, v2]}}`` (membership), all ANDed.
MetadataFilter = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ChunkInput:
    """One chunk of a document, ready to store."""

    text: str
    vector: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class DocumentInput:
    """A document with its chunks; storing it replaces any document with the same id."""

    id: str
    text: str
    metadata: Mapping[str, Any]
    chunks: Sequence[ChunkInput]


@dataclass(frozen=True, slots=True)
class CollectionStats:
    name: str
    documents: int
    chunks: int


@dataclass(frozen=True, slots=True)
class ScoredChunk:
    """A search hit: the store's chunk key and a score where higher is better."""

    key: int
    score: float


@dataclass(frozen=True, slots=True)
class StoredChunk:
    key: int
    document_id: str
    seq: int
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


class VectorStore(Protocol):
    """Collections of documents split into embedded chunks, searchable by vector and by
    keyword. Every method may be called concurrently from the event loop; implementations
    keep blocking work off it. Search and fetch raise
    :class:`trine_ml.errors.NotFound` for an unknown collection."""

    async def upsert(self, collection: str, documents: Sequence[DocumentInput]) -> None:
        """Stores ``documents`` atomically, creating the collection if needed."""
        ...

    async def delete_document(self, collection: str, document_id: str) -> bool:
        """False if there was no such document (or collection)."""
        ...

    async def delete_collection(self, collection: str) -> bool:
        """False if there was no such collection."""
        ...

    async def list_collections(self) -> list[CollectionStats]: ...

    async def get_collection(self, collection: str) -> CollectionStats | None: ...

    async def dense_search(
        self,
        collection: str,
        vector: npt.NDArray[np.float32],
        k: int,
        metadata_filter: MetadataFilter | None = None,
    ) -> list[ScoredChunk]:
        """The ``k`` chunks with the highest cosine similarity, best first."""
        ...

    async def keyword_search(
        self, collection: str, query: str, k: int, metadata_filter: MetadataFilter | None = None
    ) -> list[ScoredChunk]:
        """The ``k`` best chunks by BM25 over the query's words (any of them), best first."""
        ...

    async def fetch_chunks(self, collection: str, keys: Sequence[int]) -> list[StoredChunk]:
        """The chunks with these keys, in the order given; unknown keys are skipped."""
        ...

    async def aclose(self) -> None: ...


def matches(metadata: Mapping[str, Any], metadata_filter: MetadataFilter | None) -> bool:
    """True when every condition of the filter holds for ``metadata``."""
    if not metadata_filter:
        return True
    for key, condition in metadata_filter.items():
        if key not in metadata:
            return False
        value = metadata[key]
        if isinstance(condition, Mapping):
            if not any(_same(value, option) for option in condition["in"]):
                return False
        elif not _same(value, condition):
            return False
    return True


def _same(value: object, expected: object) -> bool:
    # JSON keeps booleans and numbers apart, and so does the filter: true does not match 1.
    if isinstance(value, bool) or isinstance(expected, bool):
        return value is expected
    return value == expected
