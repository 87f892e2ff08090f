from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from constants import AUTH
from provider_conformance import ProviderConformance
from trine_ml.embedding import AsyncEmbedder, OpenVinoEmbedder
from trine_ml.providers.base import Passage
from trine_ml.providers.extractive import ExtractiveProvider, split_sentences


@pytest.fixture
def make_provider(embedding_model: OpenVinoEmbedder) -> Iterator[Callable[[], ExtractiveProvider]]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield lambda: ExtractiveProvider(AsyncEmbedder(embedding_model, pool, cache_size=1000))


class TestExtractiveConformance(ProviderConformance):
    pass


def test_split_sentences_keeps_readable_units() -> None:
    text = 'First one.  Second "quoted."\nThird?\n\nFourth line without stop\n- a bullet'
    assert split_sentences(text) == [
        "First one.",
        'Second "quoted."',
        "Third?",
        "Fourth line without stop",
        "- a bullet",
    ]


def test_picks_the_sentence_that_answers(
    make_provider: Callable[[], ExtractiveProvider],
) -> None:
    passages = [
        Passage(0, 0.7, "Paris is a large city. The Eiffel Tower is 330 metres tall."),
        Passage(1, 0.3, "Bananas are yellow. They grow in bunches."),
    ]
    provider = make_provider()
    answer = asyncio.run(provider.answer("How tall is the Eiffel Tower?", passages))
    assert "The Eiffel Tower is 330 metres tall. [1]" in answer.text
    assert "Bananas" not in answer.text
    assert (answer.input_tokens, answer.output_tokens) == (0, 0)


def test_api_answer_citations_map_to_sources(client: TestClient) -> None:
    documents = [
        "Redis stores shared rate-limit counters. It is optional.",
        "The ML service embeds documents with MiniLM. It ranks them by cosine similarity.",
        "Wasmtime executes untrusted code. Fuel bounds the number of instructions.",
        "SQLite keeps the job queue on one machine.",
    ]
    response = client.post(
        "/rag/query",
        headers=AUTH,
        json={"query": "How are documents ranked by the ML service?", "documents": documents},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sources"][0] == 1
    assert body["provider"] == "extractive"
    # Every sentence is followed by [n]; n is the 1-based position in passages/sources,
    # and the sentence comes from that passage's document.
    pieces = re.findall(r"(.+?) \[(\d+)\](?: |$)", body["answer"])
    assert pieces, body["answer"]
    for sentence, number in pieces:
        n = int(number)
        assert 1 <= n <= len(body["sources"])
        passage = body["passages"][n - 1]
        assert passage["index"] == body["sources"][n - 1]
        assert sentence.strip() in documents[passage["index"]]
