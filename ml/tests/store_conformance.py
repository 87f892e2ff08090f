"""Checks every collection store must pass. Each backend's test module subclasses
:class:`VectorStoreConformance` and supplies a ``make_store`` fixture returning an async
factory of empty stores (built inside the event loop that uses them)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from trine_ml.errors import NotFound
from trine_ml.store.base import ChunkInput, DocumentInput, VectorStore

DIM = 8
StoreFactory = Callable[[], Awaitable[VectorStore]]


def unit(*components: float) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[: len(components)] = components
    return vector / np.linalg.norm(vector)


def doc(doc_id: str, *chunks: tuple[str, np.ndarray], **metadata: Any) -> DocumentInput:
    text = " ".join(t for t, _ in chunks)
    return DocumentInput(doc_id, text, metadata, [ChunkInput(t, v) for t, v in chunks])


FRUIT = doc(
    "fruit",
    ("Bananas are yellow and rich in potassium.", unit(1, 0)),
    ("Apples grow in orchards.", unit(0.9, 0.1)),
    lang="en",
    year=2020,
)
SANDBOX = doc("sandbox", ("The sandbox runs WebAssembly under fuel.", unit(0, 1)), lang="en")
GATEWAY = doc("gateway", ("Le gateway vérifie les clés.", unit(0.1, 0, 1)), lang="fr", year=2024)


def run(make_store: StoreFactory, scenario: Callable[[VectorStore], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        store = await make_store()
        try:
            return await scenario(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


class VectorStoreConformance:
    def test_upsert_creates_collection_with_counts(self, make_store: StoreFactory) -> None:
        async def scenario(store: VectorStore) -> None:
            assert await store.get_collection("kb") is None
            await store.upsert("kb", [FRUIT, SANDBOX])
            stats = await store.get_collection("kb")
            assert stats is not None
            assert (stats.name, stats.documents, stats.chunks) == ("kb", 2, 3)
            await store.upsert("other", [GATEWAY])
            listed = await store.list_collections()
            assert [(s.name, s.documents, s.chunks) for s in listed] == [
                ("kb", 2, 3),
                ("other", 1, 1),
            ]

        run(make_store, scenario)

    def test_dense_search_ranks_by_cosine(self, make_store: StoreFactory) -> None:
        async def scenario(store: VectorStore) -> None:
            await store.upsert("kb", [FRUIT, SANDBOX, GATEWAY])
            hits = await store.dense_search("kb", unit(0, 1), 2)
            chunks = await store.fetch_chunks("kb", [h.key for h in hits])
            assert [c.document_id for c in chunks] == ["sandbox", "fruit"]
            assert hits[0].score == pytest.approx(1.0, abs=1e-5)
            assert hits[0].score > hits[1].score
            assert chunks[0].text == "The sandbox runs WebAssembly under fuel."
            assert chunks[0].metadata == {"lang": "en"}
            assert chunks[0].seq == 0

        run(make_store, scenario)

    def test_keyword_search_uses_bm25(self, make_store: StoreFactory) -> None:
        async def scenario(store: VectorStore) -> None:
            await store.upsert("kb", [FRUIT, SANDBOX, GATEWAY])
            hits = await store.keyword_search("kb", "which fruit has potassium?", 5)
            chunks = await store.fetch_chunks("kb", [h.key for h in hits])
            assert [c.text for c in chunks] == ["Bananas are yellow and rich in potassium."]
            # Operators and punctuation in the query are words, not FTS syntax.
            assert await store.keyword_search("kb", 'NEAR("xylophone" * -) ^', 5) == []
            assert await store.keyword_search("kb", "   ", 5) == []

        run(make_store, scenario)

    def test_metadata_filters(self, make_store: StoreFactory) -> None:
        async def scenario(store: VectorStore) -> None:
            await store.upsert("kb", [FRUIT, SANDBOX, GATEWAY])

            async def dense_docs(flt: dict[str, Any]) -> set[str]:
                hits = await store.dense_search("kb", unit(1, 1, 1), 10, flt)
                return {
                    c.document_id for c in await store.fetch_chunks("kb", [h.key for h in hits])
                }

            async def keyword_docs(flt: dict[str, Any]) -> set[str]:
                hits = await store.keyword_search("kb", "bananas sandbox gateway", 10, flt)
                return {
                    c.document_id for c in await store.fetch_chunks("kb", [h.key for h in hits])
                }

            for search in (dense_docs, keyword_docs):
                assert await search({"lang": "en"}) == {"fruit", "sandbox"}
                assert await search({"lang": {"in": ["fr", "de"]}}) == {"gateway"}
                assert await search({"lang": "en", "year": 2020}) == {"fruit"}
                assert await search({"year": {"in": [2020, 2024]}}) == {"fruit", "gateway"}
                assert await search({"missing": "x"}) == set()
                assert await search({"year": "2020"}) == set()  # types must match

        run(make_store, scenario)

    def test_same_id_replaces_document(self, make_store: StoreFactory) -> None:
        async def scenario(store: VectorStore) -> None:
            await store.upsert("kb", [FRUIT, SANDBOX])
            await store.upsert("kb", [doc("fruit", ("Cherries are red.", unit(1, 0)), lang="de")])
            stats = await store.get_collection("kb")
            assert stats is not None
            assert (stats.documents, stats.chunks) == (2, 2)
            hits = await store.dense_search("kb", unit(1, 0), 5)
            chunks = await store.fetch_chunks("kb", [h.key for h in hits])
            assert next(c.text for c in chunks) == "Cherries are red."
            assert chunks[0].metadata == {"lang": "de"}
            assert await store.keyword_search("kb", "bananas", 5) == []

        run(make_store, scenario)

    def test_delete_document_and_collection(self, make_store: StoreFactory) -> None:
        async def scenario(store: VectorStore) -> None:
            await store.upsert("kb", [FRUIT, SANDBOX])
            assert await store.delete_document("kb", "fruit") is True
            assert await store.delete_document("kb", "fruit") is False
            assert await store.delete_document("nope", "fruit") is False
            hits = await store.dense_search("kb", unit(1, 0), 5)
            assert len(hits) == 1
            assert await store.keyword_search("kb", "bananas", 5) == []
            assert await store.delete_collection("kb") is True
            assert await store.delete_collection("kb") is False
            assert await store.get_collection("kb") is None
            assert await store.list_collections() == []

        run(make_store, scenario)

    def test_unknown_collection_is_not_found(self, make_store: StoreFactory) -> None:
        async def scenario(store: VectorStore) -> None:
            with pytest.raises(NotFound):
                await store.dense_search("nope", unit(1), 3)
            with pytest.raises(NotFound):
                await store.keyword_search("nope", "word", 3)

        run(make_store, scenario)

    def test_top_k_caps_and_orders(self, make_store: StoreFactory) -> None:
        async def scenario(store: VectorStore) -> None:
            docs = [doc(f"d{i}", (f"note number {i}", unit(1, i / 10))) for i in range(12)]
            await store.upsert("kb", docs)
            hits = await store.dense_search("kb", unit(1, 0), 5)
            assert len(hits) == 5
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            chunks = await store.fetch_chunks("kb", [h.key for h in hits])
            assert [c.document_id for c in chunks] == ["d0", "d1", "d2", "d3", "d4"]
            assert len(await store.dense_search("kb", unit(1, 0), 100)) == 12
            keyword = await store.keyword_search("kb", "note", 4)
            assert len(keyword) == 4
            assert [h.score for h in keyword] == sorted((h.score for h in keyword), reverse=True)

        run(make_store, scenario)
