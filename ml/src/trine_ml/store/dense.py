"""Exact top-k selection over a collection's scores."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from trine_ml.store.base import ScoredChunk


def best_scores(
    keys: npt.NDArray[np.int64], scores: npt.NDArray[np.float32], k: int
) -> list[ScoredChunk]:
    """The ``k`` best finite scores, best first (ties in row order); -inf marks rows a
    filter excluded."""
    finite = int(np.isfinite(scores).sum())
    k = min(k, finite)
    if k <= 0:
        return []
    best = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(k)
    best = best[np.argsort(-scores[best], kind="stable")]
    return [ScoredChunk(int(keys[i]), float(scores[i])) for i in best]
