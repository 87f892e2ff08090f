"""Approximate scores for every row of a large matrix, from an int8 copy of it, each with a
bound on its error, so that an exact top-k needs exact scores for a few rows only.

A dense search at 100k chunks reads a 153 MB float32 matrix, which takes 12-15 ms of one core
here and evicts the embedding model from the caches on the way. The int8 copy is a quarter of
that, and OpenVINO's matmul with int8 weights scans it in about 2.5 ms.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float32]

#: float32's unit roundoff: a sum of n products carries at most about n of it relative to the
#: sum of their magnitudes.
_ROUNDOFF = 2.0**-24


class Int8Scan:
    """Row ``i`` is stored as int8 with its own scale ``s_i = max|row| / 127``. Rounding moves
    each component by at most ``s_i / 2``, so the approximate score of a query ``q`` is within
    ``s_i / 2 * sum|q|`` of the exact one, plus float32 rounding in both dot products (each at
    most ``dimension * roundoff * max|row| * sum|q|``, counted twice over for safety)."""

    def __init__(self, vectors: Floats) -> None:
        import openvino as ov
        import openvino.opset15 as op

        dimension = vectors.shape[1]
        scale = (np.abs(vectors).max(axis=1) / 127.0).astype(np.float32)
        scale = np.maximum(scale, np.finfo(np.float32).tiny)  # all-zero rows stay zero
        quantized = np.rint(vectors / scale[:, None]).astype(np.int8)
        rounding = 4 * dimension * _ROUNDOFF * 127
        self._bound_per_norm1 = (scale * (0.5 + rounding)).astype(np.float32)
        query = op.parameter([1, dimension], ov.Type.f32, name="query")
        # Constant int8 → Convert → Multiply by a per-row scale → MatMul is the pattern the CPU
        # plugin runs as a matmul on int8 weights; the same with the matrix as an input is
        # twenty times slower, so each matrix gets its own compile (about 0.3 s at 100k rows).
        weights = op.multiply(
            op.convert(op.constant(quantized), ov.Type.f32), op.constant(scale[:, None])
        )
        model = ov.Model([op.matmul(query, weights, False, True)], [query], "int8-scan")
        compiled = ov.Core().compile_model(
            model,
            "CPU",
            {
                "INFERENCE_NUM_THREADS": 1,
                "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY",
                "ENABLE_CPU_PINNING": False,
                # bf16 would add its own rounding, which the bound does not cover.
                "INFERENCE_PRECISION_HINT": "f32",
            },
        )
        self._request: Any = compiled.create_infer_request()
        # _lock guards _request: an inference request runs one inference at a time, and
        # reuses its output buffer.
        self._lock = threading.Lock()

    def scores(self, vector: Floats) -> tuple[Floats, Floats]:
        """Approximate scores of every row, and for each the most it can be off by."""
        with self._lock:
            approx: Floats = self._request.infer({"query": vector[None, :]})[0][0].copy()
        bound: Floats = self._bound_per_norm1 * np.float32(np.abs(vector).sum())
        return approx, bound


def candidates(approx: Floats, bound: Floats, k: int) -> npt.NDArray[np.intp]:
    """The rows that can be among the ``k`` best by exact score, in row order: those whose
    upper bound reaches the k-th best lower bound. ``approx`` is -inf where a row is excluded.

    At least k rows score at least the k-th best lower bound L exactly, so the k-th best exact
    score is at least L, and every row scoring that much has an upper bound of at least L."""
    allowed = approx > -np.inf
    lower = np.where(allowed, approx - bound, -np.inf)
    n = lower.shape[0]
    if k >= n:
        return np.flatnonzero(allowed)
    kth_lower = lower[np.argpartition(lower, n - k)[n - k]]
    return np.flatnonzero(allowed & (approx + bound >= kth_lower))
