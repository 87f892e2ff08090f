from __future__ import annotations

import itertools

import pytest

from trine_ml.chunking import TokenChunker


@pytest.fixture(scope="module")
def chunker() -> TokenChunker:
    return TokenChunker.from_packages(target_tokens=40, overlap_tokens=8)


def tokens(chunker: TokenChunker, text: str) -> int:
    return len(chunker._tokenizer.encode(text, add_special_tokens=False).ids)


def test_chunks_respect_the_target_and_are_verbatim(chunker: TokenChunker) -> None:
    sentences = [f"Sentence number {i} talks about topic {i * 7}." for i in range(40)]
    text = "  ".join(sentences)
    chunks = chunker.chunk(text)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk in text
        assert tokens(chunker, chunk) <= 40
        # Sentence-aware: every chunk starts and ends on a sentence boundary.
        assert chunk.startswith("Sentence number")
        assert chunk.endswith(".")
    # Every sentence survives somewhere.
    assert all(any(s in c for c in chunks) for s in sentences)


def test_consecutive_chunks_overlap(chunker: TokenChunker) -> None:
    text = " ".join(f"Fact {i} is short." for i in range(60))
    chunks = chunker.chunk(text)
    for before, after in itertools.pairwise(chunks):
        first_sentence_of_next = after.split(".")[0] + "."
        assert first_sentence_of_next in before


def test_a_sentence_longer_than_a_chunk_is_cut(chunker: TokenChunker) -> None:
    text = "word " * 200
    chunks = chunker.chunk(text)
    assert len(chunks) >= 5
    assert all(tokens(chunker, c) <= 40 for c in chunks)
    assert sum(c.count("word") for c in chunks) >= 200


def test_blank_and_tiny_texts(chunker: TokenChunker) -> None:
    assert chunker.chunk("") == []
    assert chunker.chunk(" \n\t ") == []
    assert chunker.chunk("Hi.") == ["Hi."]


def test_default_target_is_about_two_hundred_tokens() -> None:
    chunker = TokenChunker.from_packages(target_tokens=200, overlap_tokens=32)
    text = " ".join(f"This is sentence {i} of a long technical document." for i in range(400))
    sizes = [tokens(chunker, c) for c in chunker.chunk(text)]
    assert max(sizes) <= 200
    assert min(sizes[:-1]) >= 150
