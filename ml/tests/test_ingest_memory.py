"""Ingest holds a bounded amount of memory however much text goes in."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from trine_ml.chunking import TokenChunker
from trine_ml.collection_service import CollectionService, NewDocument
from trine_ml.embedding import AsyncEmbedder, Vectors
from trine_ml.store.sqlite import SQLiteVectorStore

TOTAL_BYTES = 50 * 1024 * 1024
REQUEST_BYTES = 5 * 1024 * 1024  # the gateway caps bodies at 10 MiB, so clients send parts
MAX_RSS_GROWTH = 300 * 1024 * 1024
WORDS = [
    "kernel",
    "socket",
    "buffer",
    "page",
    "cache",
    "inode",
    "mount",
    "network",
    "route",
    "packet",
    "filter",
    "queue",
]


class HashEmbedder:
    """A fast stand-in for the model: the memory under test is the pipeline's, and real
    embeddings of 50 MB would take an hour on a shared core."""

    model_id = "hash"
    dimension = 384

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            row = np.random.default_rng(seed).standard_normal(self.dimension)
            out[i] = row / np.linalg.norm(row)
        return out


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def make_documents(rng: random.Random, size: int, start: int) -> list[NewDocument]:
    documents, total = [], 0
    while total < size:
        sentences = (
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))).capitalize() + "."
            for _ in range(rng.randint(20, 120))
        )
        text = " ".join(sentences)
        documents.append(NewDocument(text, f"doc-{start + len(documents)}", {"n": start}))
        total += len(text)
    return documents


@pytest.mark.slow
def test_ingesting_50_mb_keeps_memory_flat(tmp_path: Path) -> None:
    chunker = TokenChunker.from_packages(target_tokens=200, overlap_tokens=32)
    rng = random.Random(7)  # noqa: S311  (test data, not secrets)

    async def scenario() -> int:
        with ThreadPoolExecutor(max_workers=1) as pool:
            store = SQLiteVectorStore(tmp_path / "big.sqlite3", dimension=384)
            service = CollectionService(
                store, AsyncEmbedder(HashEmbedder(), pool, 0), chunker, pool, batch_chunks=256
            )
            try:
                baseline = rss_bytes()
                peak, sent, chunks = baseline, 0, 0
                while sent < TOTAL_BYTES:
                    documents = make_documents(rng, REQUEST_BYTES, sent)
                    result = await service.ingest("big", documents)
                    chunks += result.chunks
                    sent += sum(len(d.text) for d in documents)
                    del documents
                    peak = max(peak, rss_bytes())
                stats = await store.get_collection("big")
                assert stats is not None
                assert stats.chunks == chunks > 40_000
                return peak - baseline
            finally:
                await store.aclose()

    growth = asyncio.run(scenario())
    assert growth < MAX_RSS_GROWTH, f"RSS grew by {growth / 2**20:.0f} MiB"
