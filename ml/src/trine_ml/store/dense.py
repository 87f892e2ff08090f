"""A collection held in memory for search: its rows, its vectors, and exact top-k selection
over a score per row."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from trine_ml.store.base import MetadataFilter, ScoredChunk, matches


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


#: Rows from which a scan is split in two halves, one of them on ``DenseIndex.scanner``.
SPLIT_SCAN_ROWS = 16_384


@dataclass(frozen=True, slots=True)
class DenseIndex:
    """A collection's unit vectors as one matrix, row ``i`` being ``chunks.keys[i]``'s.
    ``scanner``, if given, scans half of a large matrix beside the searching thread."""

    chunks: CollectionRows
    vectors: npt.NDArray[np.float32]
    scanner: Executor | None = None

    def search(
        self, vector: npt.NDArray[np.float32], k: int, allowed: npt.NDArray[np.bool_] | None
    ) -> list[ScoredChunk]:
        scores = self._scores(vector.astype(np.float32, copy=False))
        if allowed is not None:
            scores[~allowed] = -np.inf
        return best_scores(self.chunks.keys, scores, k)

    def _scores(self, vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        # One BLAS thread scans at about a third of what two reach here, yet OpenBLAS's own
        # second thread spins while it waits for a core, which costs more than it saves when
        # the cores are busy (see docs/operations.md). So the two halves run on two plain
        # threads: the scanner's waits block instead of spinning, and a half the scanner has
        # not started is taken back and scanned here.
        rows = self.vectors.shape[0]
        if self.scanner is None or rows < SPLIT_SCAN_ROWS:
            scores: npt.NDArray[np.float32] = self.vectors @ vector
            return scores
        scores = np.empty(rows, dtype=np.float32)
        half = rows // 2

        def scan(start: int, stop: int) -> None:
            np.matmul(self.vectors[start:stop], vector, out=scores[start:stop])

        other = self.scanner.submit(scan, half, rows)
        scan(0, half)
        if other.cancel():
            scan(half, rows)
        else:
            other.result()
        return scores


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
