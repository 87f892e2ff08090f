"""The offline provider: answers with the passages' sentences closest to the query."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from trine_ml.embedding import AsyncEmbedder
from trine_ml.providers.base import Answer, Passage

# A sentence ends at . ! or ? (optionally followed by a closing quote or bracket) before
# whitespace, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+|\n\s*\n|\n(?=\s*[-*•])")
_MAX_SENTENCE_CHARS = 400
_MIN_SENTENCE_CHARS = 3
_RELATIVE_FLOOR = 0.6
_WORDS_PER_PIECE = 4


@dataclass(frozen=True, slots=True)
class _Sentence:
    passage_pos: int  # 0-based position of its passage in the passages list
    order: int  # position of the sentence inside its passage
    text: str


def split_sentences(text: str) -> list[str]:
    """Splits prose into sentences; whitespace inside each sentence is collapsed."""
    parts = (" ".join(part.split()) for part in _SENTENCE_END.split(text))
    return [part for part in parts if len(part) >= _MIN_SENTENCE_CHARS]


def _shorten(sentence: str) -> str:
    if len(sentence) <= _MAX_SENTENCE_CHARS:
        return sentence
    cut = sentence[:_MAX_SENTENCE_CHARS].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "…"


class ExtractiveProvider:
    """Scores every sentence of the passages against the query embedding, keeps the best
    few and returns them in reading order, each followed by its passage's ``[n]``."""

    def __init__(self, embedder: AsyncEmbedder, *, max_sentences: int = 3) -> None:
        self._embedder = embedder
        self._max_sentences = max_sentences

    @property
    def name(self) -> str:
        return "extractive"

    @property
    def model(self) -> str:
        return "extractive-v1"

    async def answer(self, query: str, passages: Sequence[Passage]) -> Answer:
        sentences = [
            _Sentence(pos, order, text)
            for pos, passage in enumerate(passages)
            for order, text in enumerate(split_sentences(passage.text))
        ]
        if not sentences:
            return Answer("The documents contain no text to answer from.", self.name, self.model)
        # The query's vector is already cached by retrieval; only new sentences hit the model.
        vectors = await self._embedder.embed([query, *(s.text for s in sentences)])
        scores = vectors[1:] @ vectors[0]
        ranked = sorted(range(len(sentences)), key=lambda i: -float(scores[i]))
        # Sentences far weaker than the best one are noise, not support for the answer.
        floor = _RELATIVE_FLOOR * float(scores[ranked[0]])
        chosen: list[_Sentence] = []
        seen: set[str] = set()
        for i in ranked:
            key = sentences[i].text.casefold()
            if key in seen:
                continue
            if chosen and float(scores[i]) < floor:
                break
            seen.add(key)
            chosen.append(sentences[i])
            if len(chosen) == self._max_sentences:
                break
        # Reading order: best passage first, sentences in the order they were written.
        chosen.sort(key=lambda s: (s.passage_pos, s.order))
        text = " ".join(f"{_shorten(s.text)} [{s.passage_pos + 1}]" for s in chosen)
        return Answer(text, self.name, self.model)

    async def stream(self, query: str, passages: Sequence[Passage]) -> AsyncIterator[str | Answer]:
        """The same answer as :meth:`answer`, sent a few words at a time: nothing is
        generated, but clients get one streaming format whatever the provider."""
        answer = await self.answer(query, passages)
        for piece in _pieces(answer.text, _WORDS_PER_PIECE):
            yield piece
        yield answer

    async def aclose(self) -> None:
        return None


def _pieces(text: str, words: int) -> list[str]:
    """Splits ``text`` into runs of ``words`` words that concatenate back to ``text``."""
    tokens = re.findall(r"\S+\s*", text)
    return ["".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]
