"""`trine eval`: retrieval quality of a running stack on a BEIR-style data set.

The corpus is ingested through the public API into a collection, then every query is asked
in each search mode with retrieval only (``"generate": false``); passages are turned into a
ranking of documents (first passage of each document) and scored against the qrels.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from trine.gateway_client import GatewayClient, ingest_all

MODES = ("dense", "keyword", "hybrid")
CUTOFF = 10
#: Chunks asked for per query: enough to rank CUTOFF distinct documents almost always.
PASSAGES_PER_QUERY = 50


@dataclass(frozen=True)
class DataSet:
    corpus: list[dict[str, Any]]
    queries: list[dict[str, str]]
    qrels: dict[str, dict[str, int]]


@dataclass(frozen=True)
class Scores:
    mrr: float
    recall: float
    ndcg: float
    queries: int


def load(data_dir: Path) -> DataSet:
    """Reads corpus.jsonl, queries.jsonl and qrels.tsv (query, document, grade; no header)."""
    corpus = [json.loads(line) for line in _lines(data_dir / "corpus.jsonl")]
    queries = [json.loads(line) for line in _lines(data_dir / "queries.jsonl")]
    qrels: dict[str, dict[str, int]] = {}
    for line in _lines(data_dir / "qrels.tsv"):
        query_id, doc_id, grade = line.split("\t")
        if int(grade) > 0:
            qrels.setdefault(query_id, {})[doc_id] = int(grade)
    return DataSet(corpus, [q for q in queries if q["id"] in qrels], qrels)


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score(rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> Scores:
    """MRR@10, recall@10 and nDCG@10 (graded gains, log2 discount) averaged over queries."""
    mrr = recall = ndcg = 0.0
    for query_id, relevant in qrels.items():
        ranked = list(rankings.get(query_id, []))[:CUTOFF]
        hits = [rank for rank, doc in enumerate(ranked, start=1) if doc in relevant]
        mrr += 1.0 / hits[0] if hits else 0.0
        recall += len(hits) / len(relevant)
        dcg = sum(relevant[ranked[r - 1]] / math.log2(r + 1) for r in hits)
        ideal = sorted(relevant.values(), reverse=True)[:CUTOFF]
        ndcg += dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    n = len(qrels)
    return Scores(mrr / n, recall / n, ndcg / n, n) if n else Scores(0.0, 0.0, 0.0, 0)


def document_ranking(passages: Sequence[Mapping[str, Any]]) -> list[str]:
    """Documents in the order of their best passage."""
    return list(dict.fromkeys(str(p["document_id"]) for p in passages))


def ingest(client: GatewayClient, collection: str, data: DataSet, out: TextIO) -> None:
    documents = [
        {"id": d["id"], "text": d["text"], "metadata": {"title": d.get("title", "")}}
        for d in data.corpus
    ]
    client.delete_collection(collection)
    started = time.monotonic()
    done = chunks = 0
    for count, stored in ingest_all(client, collection, documents):
        chunks += stored
        done += count
        rate = done / max(time.monotonic() - started, 1e-9)
        out.write(f"\ringested {done}/{len(documents)} documents, {chunks} chunks ({rate:.0f}/s)")
        out.flush()
    out.write(f"\ningested in {time.monotonic() - started:.1f}s\n")


def run_queries(
    client: GatewayClient, collection: str, data: DataSet, mode: str, out: TextIO
) -> dict[str, list[str]]:
    rankings: dict[str, list[str]] = {}
    started = time.monotonic()
    for i, query in enumerate(data.queries, start=1):
        answer = client.query(
            {
                "collection": collection,
                "query": query["text"],
                "mode": mode,
                "top_k": PASSAGES_PER_QUERY,
                "generate": False,
            }
        )
        rankings[query["id"]] = document_ranking(answer["passages"])
        if i % 25 == 0 or i == len(data.queries):
            out.write(f"\r{mode}: {i}/{len(data.queries)} queries")
            out.flush()
    ms = (time.monotonic() - started) * 1000 / max(len(data.queries), 1)
    out.write(f" ({ms:.1f} ms per query)\n")
    return rankings


def evaluate(
    client: GatewayClient,
    data_dir: Path,
    *,
    collection: str,
    modes: Sequence[str] = MODES,
    skip_ingest: bool = False,
    progress: TextIO = sys.stderr,
) -> dict[str, Scores]:
    """Ingests the set (unless told not to) and scores each mode."""
    data = load(data_dir)
    if not skip_ingest:
        ingest(client, collection, data, progress)
    return {
        mode: score(run_queries(client, collection, data, mode, progress), data.qrels)
        for mode in modes
    }


def format_table(results: Mapping[str, Scores]) -> str:
    lines = [f"{'mode':<8} {'MRR@10':>7} {'R@10':>7} {'nDCG@10':>8} {'queries':>8}"]
    for mode, s in results.items():
        lines.append(f"{mode:<8} {s.mrr:>7.3f} {s.recall:>7.3f} {s.ndcg:>8.3f} {s.queries:>8}")
    return "\n".join(lines)
