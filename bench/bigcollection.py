"""The generated large collection the RAG benchmarks search (bench/rag_bench.py,
bench/scale_bench.py), written straight into one or more stores.

Embedding 100k real chunks would take hours on this machine, and search cost does not depend
on what the vectors mean. The chunks' text is drawn from the words of the man-page corpus (so
BM25 sees a real vocabulary), 150 words (~200 MiniLM tokens) each, 10 per document. The
vectors come from a `VectorSource`: random unit vectors by default, or `mixed_vectors`,
perturbed mixtures of real MiniLM embeddings of the corpus, for measurements (such as an
approximate index's recall) that depend on how vectors cluster. Generation is seeded, so
every run, and every store of one run, holds the same data.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from benchlib import ROOT
from trine_ml.store.base import ChunkInput, DocumentInput, VectorStore

DATA = Path(os.environ.get("TRINE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "manpages-dev"
BIG = "bench-100k"
DIMENSION = 384
WORDS_PER_CHUNK = 150  # about 200 MiniLM tokens of man-page prose
CHUNKS_PER_DOCUMENT = 10
BATCH_CHUNKS = 2000

Vectors = npt.NDArray[np.float32]
#: Returns `n` unit vectors of DIMENSION components for the next document.
VectorSource = Callable[[int], Vectors]


def load_corpus() -> tuple[list[dict[str, Any]], list[str]]:
    """The man-page corpus's documents and its queries' texts."""
    corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").read_text().splitlines()]
    queries = [
        json.loads(line)["text"] for line in (DATA / "queries.jsonl").read_text().splitlines()
    ]
    return corpus, queries


def random_vectors(seed: int = 7) -> VectorSource:
    """Independent random unit vectors: no structure at all."""
    rng = np.random.default_rng(seed)

    def draw(n: int) -> Vectors:
        raw = rng.standard_normal((n, DIMENSION)).astype(np.float32)
        raw /= np.linalg.norm(raw, axis=1, keepdims=True)
        return raw

    return draw


def mixed_vectors(basis: Vectors, seed: int = 7, noise: float = 0.5) -> VectorSource:
    """Unit vectors near the real embeddings in `basis` (rows of unit vectors): each is one
    basis row, plus up to 0.7 of a second, plus isotropic noise of about `noise` times the
    signal's length. They cluster by topic as sentence embeddings do, unlike random ones."""
    rng = np.random.default_rng(seed)
    sigma = noise / np.sqrt(DIMENSION)

    def draw(n: int) -> Vectors:
        first = basis[rng.integers(0, len(basis), n)]
        second = basis[rng.integers(0, len(basis), n)]
        weight = rng.uniform(0.0, 0.7, (n, 1)).astype(np.float32)
        raw = first + weight * second + rng.normal(0.0, sigma, (n, DIMENSION)).astype(np.float32)
        raw /= np.linalg.norm(raw, axis=1, keepdims=True)
        return raw.astype(np.float32)

    return draw


def corpus_passages(corpus: list[dict[str, Any]], words: int = WORDS_PER_CHUNK) -> list[str]:
    """The first `words` words of every corpus document: the texts `mixed_vectors` bases on."""
    return [" ".join(doc["text"].split()[:words]) for doc in corpus]


async def fill(
    stores: Sequence[VectorStore],
    chunks: int,
    corpus: list[dict[str, Any]],
    vectors: VectorSource | None = None,
    collection: str = BIG,
    label: str = "generated",
    spent: list[float] | None = None,
) -> float:
    """Writes `chunks` generated chunks into every store of `stores` (the same batches, in
    the same order) through their own upsert; returns the seconds it took. `spent`, if given,
    receives the seconds each store's upserts took, in the order of `stores`."""
    per_store = [0.0] * len(stores)
    words = [w for doc in corpus for w in re.findall(r"[A-Za-z][A-Za-z_-]+", doc["text"])]
    rng = random.Random(20240607)
    draw = vectors or random_vectors()
    started = time.monotonic()
    for first in range(0, chunks, BATCH_CHUNKS):
        batch = []
        last = min(chunks, first + BATCH_CHUNKS)
        for d in range(first // CHUNKS_PER_DOCUMENT, -(-last // CHUNKS_PER_DOCUMENT)):
            raw = draw(CHUNKS_PER_DOCUMENT)
            parts = [
                ChunkInput(" ".join(rng.choices(words, k=WORDS_PER_CHUNK)) + ".", raw[i])
                for i in range(CHUNKS_PER_DOCUMENT)
            ]
            text = " ".join(p.text for p in parts)
            batch.append(DocumentInput(f"gen-{d}", text, {"shard": d % 10}, parts))
        for i, store in enumerate(stores):
            upsert_started = time.monotonic()
            await store.upsert(collection, batch)
            per_store[i] += time.monotonic() - upsert_started
        rate = last / max(time.monotonic() - started, 1e-9)
        print(f"\r{label} {last}/{chunks} chunks ({rate:.0f}/s)", end="", flush=True)
    print()
    if spent is not None:
        spent[:] = per_store
    return time.monotonic() - started
