"""Turning a free-text query into search terms: the words both keyword backends use, and the
FTS5 match expression of the SQLite one."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)

# Words so common that they carry almost no BM25 weight yet make FTS5 walk most of the
# index: dropping them keeps keyword search fast on large collections.
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
        "does",
        "do",
        "can",
    ]
)


def content_words(query: str) -> list[str]:
    """The query's distinct lowercased words without stopwords (all of them when nothing
    else is left), in order of first appearance; punctuation and operators are dropped."""
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))
    return [w for w in words if w not in STOPWORDS] or words


def match_expression(query: str, collection_id: int) -> str | None:
    """``collection_id : N AND text : ("w1" OR "w2" ...)`` over the query's words (without
    stopwords, unless nothing else is left), or None when the query has no words. Each word
    is quoted, so FTS5 operators or column names in the query are plain words."""
    content = content_words(query)
    if not content:
        return None
    terms = " OR ".join('"' + w.replace('"', '""') + '"' for w in content)
    return f"collection_id : {collection_id} AND text : ({terms})"
