from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import pytest

from trine.evaluate import document_ranking, load, score
from trine.gateway_client import MAX_BATCH_DOCUMENTS, batches, ingest_all
from trine.ingest_files import UnsupportedFile, extract_text


def test_scores_of_known_rankings() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}}
    rankings = {"q1": ["a", "x"], "q2": ["x", "y", "b"], "q3": [f"n{i}" for i in range(10)] + ["c"]}
    s = score(rankings, qrels)
    assert s.queries == 3
    assert s.mrr == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert s.recall == pytest.approx(2 / 3)
    assert s.ndcg == pytest.approx((1 + 1 / math.log2(4)) / 3)


def test_graded_ndcg_uses_the_ideal_order() -> None:
    qrels = {"q": {"a": 2, "b": 1}}
    assert score({"q": ["a", "b"]}, qrels).ndcg == pytest.approx(1.0)
    assert score({"q": ["b", "a"]}, qrels).ndcg < 1.0
    assert score({"q": ["b", "a"]}, qrels).recall == 1.0


def test_documents_rank_by_their_best_passage() -> None:
    passages = [{"document_id": d} for d in ["b", "a", "b", "c", "a"]]
    assert document_ranking(passages) == ["b", "a", "c"]


def test_load_reads_a_beir_set(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text('{"id": "d1", "title": "t", "text": "x"}\n')
    (tmp_path / "queries.jsonl").write_text(
        '{"id": "q1", "text": "x?"}\n{"id": "q2", "text": "y"}\n'
    )
    (tmp_path / "qrels.tsv").write_text("q1\td1\t1\n")
    data = load(tmp_path)
    assert [q["id"] for q in data.queries] == ["q1"]  # q2 has no judgement
    assert data.qrels == {"q1": {"d1": 1}}


def test_batches_are_bounded() -> None:
    docs = [{"text": "x" * 10} for _ in range(200)] + [{"text": "y" * 3_000_000}, {"text": "z"}]
    groups = list(batches(docs))
    assert sum(len(g) for g in groups) == len(docs)
    assert all(len(g) <= MAX_BATCH_DOCUMENTS for g in groups)
    assert [len(g) for g in groups if any(d["text"][0] == "y" for d in g)] == [1]


def test_a_slow_ingest_request_does_not_hold_back_the_others() -> None:
    release = threading.Event()

    class SlowFirstBatch:
        def ingest(self, collection: str, batch: list[dict[str, Any]]) -> dict[str, Any]:
            if batch[0]["id"] == "d0":
                release.wait(5)
                return {"chunks": 0}
            return {"chunks": len(batch)}

    docs = [{"id": f"d{i}", "text": "x"} for i in range(MAX_BATCH_DOCUMENTS * 4)]
    results = ingest_all(SlowFirstBatch(), "c", docs, parallel=2)  # type: ignore[arg-type]
    try:
        # While the first batch is stuck, the second place serves the three others.
        first = [next(results) for _ in range(3)]
        assert first == [(MAX_BATCH_DOCUMENTS, MAX_BATCH_DOCUMENTS)] * 3
        assert not release.is_set()
    finally:
        release.set()
    assert list(results) == [(MAX_BATCH_DOCUMENTS, 0)]


def test_text_extraction(tmp_path: Path) -> None:
    html = tmp_path / "page.html"
    html.write_text(
        "<html><head><style>p{}</style><script>var x;</script></head>"
        "<body><h1>Title</h1><p>First &amp; para.</p><p>Second\n   para.</p></body></html>"
    )
    assert extract_text(html) == "Title\n\nFirst & para.\n\nSecond para."
    md = tmp_path / "notes.md"
    md.write_text("# Notes\n\nSome text.")
    assert extract_text(md) == "# Notes\n\nSome text."
    with pytest.raises(UnsupportedFile):
        extract_text(tmp_path / "image.png")


def test_pdf_text_extraction(tmp_path: Path) -> None:
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    page = writer.add_blank_page(width=300, height=200)
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})}
    )
    content = DecodedStreamObject()
    content.set_data(b"BT /F1 12 Tf 20 100 Td (Hello from a PDF) Tj ET")
    page[NameObject("/Contents")] = writer._add_object(content)
    path = tmp_path / "doc.pdf"
    with path.open("wb") as handle:
        writer.write(handle)
    assert extract_text(path) == "Hello from a PDF"
