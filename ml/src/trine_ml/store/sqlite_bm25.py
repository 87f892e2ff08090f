"""Keyword search of the SQLite store in memory: a collection's FTS5 postings as arrays,
scored with the formula of FTS5's ``bm25()``.

FTS5 computes ``bm25()`` for every row that matches any query word, one callback per row;
on a large collection most rows contain one of a query's words, so a search costs hundreds
of milliseconds. Here each term's postings (rows, term frequencies, and token offsets for the
query words FTS5 reads as phrases, such as ``EVP_KDF``) are arrays, and a search is a few
vector operations per word. The postings come from FTS5 itself (through an ``fts5vocab``
table) and query words are turned into terms by an FTS5 table with the same tokenizer, so
both see exactly the terms FTS5 sees. They take about 5 bytes per (term, row) pair and 1 per
token: 77 MB for 100k chunks of 150 words, half the size of the same collection's vectors.

The ranking is FTS5's with the collection as the corpus: the number of rows, the average row
length and each term's document frequency are the collection's, where FTS5 would count every
collection in the file. With one collection in the file the scores are FTS5's; with several, a
collection's ranking no longer depends on what the others hold.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from trine_ml.store.base import ScoredChunk
from trine_ml.store.dense import CollectionRows, best_scores

# FTS5's bm25() constants (fts5_aux.c): k1, b, and the floor of a term's IDF.
K1 = 1.2
B = 0.75
MIN_IDF = 1e-6

#: Per-connection temporary tables: the chunk index's postings, one row per token instance,
#: and a scratch FTS5 table that tokenizes query words with chunks_fts's tokenizer.
TEMP_TABLES = """
CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunk_tokens USING fts5vocab(main, chunks_fts, 'instance');
CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_words USING fts5(word, tokenize='porter unicode61');
CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_tokens USING fts5vocab(temp, query_words, 'instance');
"""


@dataclass(frozen=True, slots=True)
class KeywordIndex:
    """A collection's postings. Term ``t`` occurs in the rows ``rows[starts[t]:starts[t + 1]]``,
    ``frequencies[...]`` times in each; the offsets of those occurrences in their rows' text,
    row after row, are ``offsets[instance_starts[t]:instance_starts[t + 1]]``."""

    chunks: CollectionRows
    term_ids: dict[str, int]
    starts: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int32]
    frequencies: npt.NDArray[np.unsignedinteger[Any]]
    instance_starts: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.unsignedinteger[Any]]
    # k1 * (1 - b + b * |D| / avgdl) for each row: the part of bm25's denominator that
    # does not depend on the term.
    length_norm: npt.NDArray[np.float64]

    def search(
        self,
        phrases: Sequence[Sequence[str]],
        k: int,
        allowed: npt.NDArray[np.bool_] | None = None,
    ) -> list[ScoredChunk]:
        """The ``k`` best rows (restricted to ``allowed`` rows, if given) containing any of
        the phrases (sequences of terms), by bm25. Each phrase counts on its own, even when
        listed twice, as FTS5's phrases do."""
        n = len(self.chunks.keys)
        scores = np.zeros(n, dtype=np.float64)
        for phrase in phrases:
            rows, frequencies = self._postings(phrase)
            if rows.size == 0:
                continue
            idf = math.log((n - rows.size + 0.5) / (rows.size + 0.5))
            if idf <= 0.0:  # a phrase in most rows: FTS5 floors its weight
                idf = MIN_IDF
            tf = frequencies.astype(np.float64)
            # Each row appears once in a phrase's postings: the fancy-indexed += adds once.
            scores[rows] += idf * ((tf * (K1 + 1.0)) / (tf + self.length_norm[rows]))
        # Every matching row scores above zero (the IDF floor is positive).
        keep = scores > 0.0
        if allowed is not None:
            keep &= allowed
        return best_scores(self.chunks.keys, np.where(keep, scores, -np.inf), k)

    def _postings(self, phrase: Sequence[str]) -> tuple[npt.NDArray[np.int32], npt.NDArray[Any]]:
        """The rows holding the phrase, ascending, and how many times each holds it."""
        ids = [self.term_ids.get(term) for term in phrase]
        if None in ids:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        if len(ids) == 1:
            t = ids[0]
            assert t is not None
            return self.rows[self.starts[t] : self.starts[t + 1]], self.frequencies[
                self.starts[t] : self.starts[t + 1]
            ]
        # An occurrence of the phrase is one of its first term, followed by the i-th term
        # i offsets later.
        occurrences = [self._occurrences(t) for t in ids if t is not None]
        found = occurrences[0]
        for i, following in enumerate(occurrences[1:], start=1):
            wanted = found + i
            at = np.minimum(np.searchsorted(following, wanted), following.size - 1)
            found = found[following[at] == wanted]
        rows = (found >> 32).astype(np.int32)
        first = np.flatnonzero(np.diff(rows, prepend=-1))
        return rows[first], np.diff(first, append=rows.size)

    def _occurrences(self, t: int) -> npt.NDArray[np.int64]:
        """Term ``t``'s occurrences as ``row << 32 | offset``, ascending."""
        span = slice(self.starts[t], self.starts[t + 1])
        rows = np.repeat(self.rows[span].astype(np.int64), self.frequencies[span])
        offsets = self.offsets[self.instance_starts[t] : self.instance_starts[t + 1]]
        return (rows << 32) | offsets.astype(np.int64)


def load_keyword_index(conn: sqlite3.Connection, chunks: CollectionRows) -> KeywordIndex:
    """Reads the postings of ``chunks``' rows from FTS5; call it in the read transaction
    that read ``chunks``, so both describe the same version."""
    keys = chunks.keys
    n = len(keys)
    term_ids: dict[str, int] = {}
    # Kept in their narrowest types: they are all alive until the end.
    row_parts: list[npt.NDArray[np.int32]] = []
    tf_parts: list[npt.NDArray[np.unsignedinteger[Any]]] = []
    offset_parts: list[npt.NDArray[np.unsignedinteger[Any]]] = []
    if n:
        # Chunk key -> row, -1 for keys of other collections (keys are small integers).
        row_of = np.full(int(keys[-1]) + 1, -1, dtype=np.int32)
        row_of[keys] = np.arange(n, dtype=np.int32)
        # One row per term with its occurrences' rowids and offsets, in the same order
        # (rowid, then offset), as text: parsing that in numpy is far cheaper than a Python
        # row per occurrence.
        found = conn.execute(
            "SELECT term, group_concat(doc), group_concat(offset) FROM temp.chunk_tokens"
            " WHERE col = 'text' AND doc BETWEEN ? AND ? GROUP BY term",
            (int(keys[0]), int(keys[-1])),
        )
        for term, docs, offsets in found:
            positions = row_of[np.fromstring(docs, dtype=np.int64, sep=",")]
            ours = positions >= 0
            positions = positions[ours]
            if positions.size == 0:
                continue
            # A term's occurrences come grouped by row: each run is one row's frequency.
            first = np.flatnonzero(np.diff(positions, prepend=-1))
            term_ids[term] = len(row_parts)
            row_parts.append(positions[first])
            tf_parts.append(_narrow(np.diff(first, append=positions.size)))
            offset_parts.append(_narrow(np.fromstring(offsets, dtype=np.int64, sep=",")[ours]))
    counts = np.array([len(p) for p in row_parts], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    instances = np.array([len(p) for p in offset_parts], dtype=np.int64)
    instance_starts = np.concatenate([[0], np.cumsum(instances)]).astype(np.int64)
    rows = np.concatenate(row_parts) if row_parts else np.zeros(0, np.int32)
    # Concatenating parts of several types gives the widest of them.
    frequencies = np.concatenate(tf_parts) if tf_parts else np.zeros(0, np.uint8)
    offsets = np.concatenate(offset_parts) if offset_parts else np.zeros(0, np.uint8)
    # FTS5 counts a row's length over all its columns: the text's tokens plus the one token
    # of the collection id.
    lengths = np.bincount(rows, weights=frequencies, minlength=n) + 1.0
    avgdl = lengths.sum() / n if n else 1.0
    length_norm = K1 * (1 - B + B * lengths / avgdl)
    return KeywordIndex(
        chunks, term_ids, starts, rows, frequencies, instance_starts, offsets, length_norm
    )


def _narrow(values: npt.NDArray[np.int64]) -> npt.NDArray[np.unsignedinteger[Any]]:
    """Term frequencies and offsets are small: the narrowest unsigned type that holds them
    (uint8 or uint16 in practice) saves most of their memory."""
    return values.astype(np.min_scalar_type(int(values.max(initial=0))))


def query_phrases(conn: sqlite3.Connection, words: Sequence[str]) -> list[list[str]] | None:
    """The FTS5 terms of each query word, in order: one term, or several for a word FTS5
    splits (``a_b`` is the phrase ``a b``). None if a word has no term at all."""
    conn.execute("DELETE FROM temp.query_words")
    conn.executemany(
        "INSERT INTO temp.query_words (rowid, word) VALUES (?, ?)", list(enumerate(words))
    )
    phrases: list[list[str]] = [[] for _ in words]
    for doc, term in conn.execute("SELECT doc, term FROM temp.query_tokens ORDER BY doc, offset"):
        phrases[doc].append(term)
    return phrases if all(phrases) else None
