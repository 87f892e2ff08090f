"""`trine ingest`: extract text from files on this machine and store them in a collection
through the public API, in bounded batches."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TextIO

from trine.gateway_client import GatewayClient, ingest_all

SUPPORTED = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")


class UnsupportedFile(ValueError):
    """A file whose type the command cannot read."""


def extract_text(path: Path) -> str:
    """The readable text of one file."""
    suffix = path.suffix.lower()
    if suffix in (".txt", ".md", ".markdown"):
        return path.read_text(encoding="utf-8", errors="replace")
    if suffix in (".html", ".htm"):
        parser = _TextOfHtml()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        parser.close()
        return parser.text()
    if suffix == ".pdf":
        from pypdf import PdfReader

        pages = (page.extract_text() or "" for page in PdfReader(path).pages)
        return "\n\n".join(page.strip() for page in pages if page.strip())
    raise UnsupportedFile(f"{path}: unsupported type (use one of {', '.join(SUPPORTED)})")


class _TextOfHtml(HTMLParser):
    """Text outside script/style, with block elements as paragraph breaks."""

    _SKIP = frozenset({"script", "style", "noscript", "template"})
    _BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self._parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self._BLOCK:
            self._parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self._parts.append(data)

    def text(self) -> str:
        paragraphs = "".join(self._parts).split("\n\n")
        return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def ingest_files(
    client: GatewayClient, collection: str, files: Sequence[Path], out: TextIO = sys.stderr
) -> tuple[int, int]:
    """Reads every file (failing early on an unreadable one), then ingests them in batches.
    Each document's id is its path as given, so running again replaces it."""
    documents: list[dict[str, Any]] = []
    for path in files:
        text = extract_text(path)
        if text.strip():
            documents.append(
                {
                    "id": str(path),
                    "text": text,
                    "metadata": {"source": str(path), "type": path.suffix.lower().lstrip(".")},
                }
            )
        else:
            out.write(f"skipped {path}: no text\n")
    started = time.monotonic()
    done = chunks = 0
    for count, stored in ingest_all(client, collection, documents):
        chunks += stored
        done += count
        out.write(f"\r{collection}: {done}/{len(documents)} files, {chunks} chunks")
        out.flush()
    out.write(f"\ndone in {time.monotonic() - started:.1f}s\n")
    return done, chunks
