"""A collection held in memory for search: its rows, its vectors, and exact top-k selection
over a score per row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from trine_ml.store.base import MetadataFilter, ScoredChunk, matches
from trine_ml.store.int8_scan import Int8Scan, candidates


@dataclass(frozen=True, slots=True)
class CollectionRows:
    """A collection's chunks at one version, in key order: each row's chunk key and the
    position of its document in ``doc_metadata``."""

    collection_id: int
    version: int
    keys: npt.NDArray[np.int64]
    doc_rows: npt.NDArray[np.int64]
    doc_metadata: list[dict[str, Any]]

    def allowed(self, metadata_filter: MetadataFilter | None) -> npt.NDArray[np.bool_] | None:
        """Which rows the filter lets through, or None when there is no filter."""
        if not metadata_filter:
            return None
        documents = np.fromiter(
            (matches(m, metadata_filter) for m in self.doc_metadata),
            dtype=bool,
            count=len(self.doc_metadata),
        )
        return documents[self.doc_rows]


#: From this many rows, a search scans an int8 copy of the matrix first (see
#: :mod:`trine_ml.store.int8_scan`); below, the float32 scan takes under 2.5 ms anyway.
INT8_SCAN_ROWS = 16_384


@dataclass(frozen=True, slots=True)
class DenseIndex:
    """A collection's unit vectors as one matrix, row ``i`` being ``chunks.keys[i]``'s.
    Searches are exact either way; ``int8`` makes them faster on large matrices."""

    chunks: CollectionRows
    vectors: npt.NDArray[np.float32]
    int8: Int8Scan | None = None

    @classmethod
    def build(cls, chunks: CollectionRows, vectors: npt.NDArray[np.float32]) -> DenseIndex:
        large = vectors.shape[0] >= INT8_SCAN_ROWS
        return cls(chunks, vectors, Int8Scan(vectors) if large else None)

    def search(
        self, vector: npt.NDArray[np.float32], k: int, allowed: npt.NDArray[np.bool_] | None
    ) -> list[ScoredChunk]:
        vector = vector.astype(np.float32, copy=False)
        if self.int8 is not None:
            approx, bound = self.int8.scores(vector)
            if allowed is not None:
                approx[~allowed] = -np.inf
            rows = candidates(approx, bound, k)
            # Past a quarter of the rows, gathering them costs more than scanning them all.
            if rows.shape[0] * 4 <= approx.shape[0]:
                exact: npt.NDArray[np.float32] = self.vectors[rows] @ vector
                return best_scores(self.chunks.keys[rows], exact, k)
        scores: npt.NDArray[np.float32] = self.vectors @ vector
        if allowed is not None:
            scores[~allowed] = -np.inf
        return best_scores(self.chunks.keys, scores, k)


def best_scores(
    keys: npt.NDArray[np.int64], scores: npt.NDArray[np.floating[Any]], k: int
) -> list[ScoredChunk]:
    """The ``k`` best finite scores, best first (ties in row order); -inf marks rows a
    filter excluded."""
    n = scores.shape[0]
    k = min(k, n)
    if k <= 0:
        return []
    if k < n:
        # Every row scoring at least the k-th best score, so that ties at the cut are broken
        # by row order too, not by where the partition happened to put them.
        threshold = scores[np.argpartition(scores, n - k)[n - k]]
        best = np.flatnonzero(scores >= threshold if threshold > -np.inf else scores > -np.inf)
    else:
        best = np.flatnonzero(scores > -np.inf)
    best = best[np.argsort(-scores[best], kind="stable")[:k]]
    return [ScoredChunk(int(keys[i]), float(scores[i])) for i in best]
