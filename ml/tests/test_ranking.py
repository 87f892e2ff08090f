from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from trine_ml.embedding import AsyncEmbedder, OpenVinoEmbedder
from trine_ml.ranking import rank

DOCUMENTS = [
    "Bananas are yellow fruit rich in potassium that grow in tropical climates.",
    "The Go gateway authenticates API keys and enforces rate limits for every client.",
    "Wasmtime runs untrusted WebAssembly modules with fuel and memory limits.",
    "The French Revolution began in 1789 with the storming of the Bastille.",
]


def test_unambiguous_query_ranks_right_document_first(embedding_model: OpenVinoEmbedder) -> None:
    vectors = embedding_model.embed(
        ["Which component checks API keys and rate limits?", *DOCUMENTS]
    )
    hits = rank(vectors[0], vectors[1:], top_k=4)
    assert hits[0].index == 1
    assert hits[0].score > hits[1].score + 0.1
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_each_topic_finds_its_document(embedding_model: OpenVinoEmbedder) -> None:
    queries = {
        "tropical fruit with potassium": 0,
        "sandboxing wasm code safely": 2,
        "when did the revolution in France start": 3,
    }

    async def embed_all() -> np.ndarray:
        with ThreadPoolExecutor(max_workers=1) as pool:
            embedder = AsyncEmbedder(embedding_model, pool, cache_size=100)
            return await embedder.embed([*queries, *DOCUMENTS])

    vectors = asyncio.run(embed_all())
    docs = vectors[len(queries) :]
    for row, expected in enumerate(queries.values()):
        assert rank(vectors[row], docs, top_k=1)[0].index == expected


def test_rank_caps_top_k_and_breaks_ties_by_order() -> None:
    docs = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)
    hits = rank(np.array([1, 0], dtype=np.float32), docs, top_k=50)
    assert [h.index for h in hits] == [0, 2, 1]
    assert rank(np.array([1, 0], dtype=np.float32), docs[:0], top_k=3) == []
