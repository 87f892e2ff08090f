"""Stored collections: the ``VectorStore`` protocol and its backends."""

from trine_ml.store.base import (
    ChunkInput,
    CollectionStats,
    DocumentInput,
    MetadataFilter,
    ScoredChunk,
    StoredChunk,
    VectorStore,
)

__all__ = [
    "ChunkInput",
    "CollectionStats",
    "DocumentInput",
    "MetadataFilter",
    "ScoredChunk",
    "StoredChunk",
    "VectorStore",
]
