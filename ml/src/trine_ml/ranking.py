"""Ranking documents by cosine similarity to a query."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Hit:
    """One ranked document: its index in the caller's list and its cosine similarity."""

    index: int
    score: float


def rank(
    query_vector: npt.NDArray[np.float32], doc_vectors: npt.NDArray[np.float32], top_k: int
) -> list[Hit]:
    """The ``top_k`` best documents, best first. Vectors are unit length, so cosine is a dot
    product. Ties keep document order, so results are deterministic."""
    if doc_vectors.shape[0] == 0 or top_k <= 0:
        return []
    scores = doc_vectors @ query_vector
    top_k = min(top_k, scores.shape[0])
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [Hit(index=int(i), score=float(scores[i])) for i in order]
