"""RAG through the gateway: ingest throughput, retrieval latency on a 100k-chunk collection,
inline queries cold and warm against the seed's algorithm, and query embedding latency.

Starts a real stack (gateway, two ML replicas on the extractive provider, sandbox) on free
ports. The 100k-chunk collection is generated before the stack starts and written straight
into the store file the replicas share: embedding 100k real chunks would take hours on
this machine, and search cost does not depend on what the vectors mean. Its text is drawn
from the words of the man-page corpus (so BM25 sees a real vocabulary) and its vectors are
random unit vectors. Everything else goes through the public API.

The baseline is the seed's algorithm — embed the query and every document on every call,
then rank by numpy cosine — run in this process with the same MiniLM engine (the seed used
sentence-transformers on PyTorch, which is not installed here) and no cache.

    .venv/bin/python bench/rag_bench.py [--chunks 100000] [--queries 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from benchlib import bench_config, pct
from bigcollection import BIG, DIMENSION, fill, load_corpus
from trine_ml.embedding import OpenVinoEmbedder
from trine_ml.store.sqlite import SQLiteVectorStore

from trine.credentials import ApiKey, new_key
from trine.gateway_client import GatewayClient, ingest_all
from trine.stack import Stack


def summary(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values):7.2f} ms  p95 {pct(values, 0.95):7.2f} ms"
        f"  p99 {pct(values, 0.99):7.2f} ms  (n={len(values)})"
    )


def timed(c: httpx.Client, body: dict[str, Any], path: str = "/v1/rag/query") -> float:
    """Milliseconds for one query: through the gateway, or ``/rag/query`` of a replica."""
    start = time.perf_counter()
    resp = c.post(path, json=body)
    elapsed = (time.perf_counter() - start) * 1000
    if resp.status_code != 200:
        sys.exit(f"bench: unexpected {resp.status_code}: {resp.text[:200]}")
    return elapsed


def build_big_collection(path: Path, chunks: int, corpus: list[dict[str, Any]]) -> float:
    """Writes the generated collection into the store file; returns the seconds it took."""

    async def write() -> float:
        store = SQLiteVectorStore(path, dimension=DIMENSION)
        try:
            return await fill([store], chunks, corpus)
        finally:
            await store.aclose()

    seconds = asyncio.run(write())
    # The new file (over 500 MB at 100k) is still dirty in the page cache: written back while
    # ingest is measured, it would bill that writeback to the ingest's checkpoints.
    os.sync()
    return seconds


def bench_ingest(client: GatewayClient, corpus: list[dict[str, Any]]) -> None:
    documents = [{"id": d["id"], "text": d["text"]} for d in corpus[:200]]
    started = time.perf_counter()
    chunks = sum(stored for _, stored in ingest_all(client, "bench-ingest", documents))
    seconds = time.perf_counter() - started
    print(
        f"ingest           {len(documents)} documents, {chunks} chunks in {seconds:.1f}s:"
        f" {chunks / seconds:.1f} chunks/s (2 requests in flight, 2 replicas)"
    )


def warm_replica(replica: httpx.Client, name: str, queries: list[str]) -> None:
    """Straight to one replica: its first query loads the collection's matrix and starts its
    in-memory keyword index build in the background (FTS5 answers until it is done), so the
    measurements that follow time neither. The index is taken as ready once five keyword
    queries in a row come back in under 100 ms (FTS5 takes several hundred at 100k)."""
    warm_up = {"collection": BIG, "query": "warm up", "generate": False}
    print(f"first query      {name}: {timed(replica, warm_up, '/rag/query'):.0f} ms (loads)")
    start = time.perf_counter()
    fast = 0
    for i in range(100_000):
        body = {"collection": BIG, "query": queries[i % len(queries)], "mode": "keyword"}
        fast = fast + 1 if timed(replica, {**body, "generate": False}, "/rag/query") < 100 else 0
        if fast == 5:
            break
        if time.perf_counter() - start > 180:
            sys.exit(f"bench: the keyword index of {name} was not ready after 180 s")
        time.sleep(0.05)
    print(f"keyword index    {name}: ready {time.perf_counter() - start:.1f} s after it")


def bench_retrieval(
    c: httpx.Client, replicas: list[httpx.Client], queries: list[str], n: int
) -> None:
    for i, replica in enumerate(replicas):
        warm_replica(replica, f"replica {i}", queries)
    for mode in ("dense", "keyword", "hybrid"):
        times = [
            timed(c, {"collection": BIG, "query": q, "mode": mode, "top_k": 5, "generate": False})
            for q in queries[:n]
        ]
        print(f"retrieval {mode:<7}{summary(times)}")
    times = [timed(c, {"collection": BIG, "query": q, "top_k": 5}) for q in queries[n : 2 * n]]
    print(f"hybrid + answer  {summary(times)}")


def bench_inline(
    c: httpx.Client, model: OpenVinoEmbedder, corpus: list[dict[str, Any]], n: int
) -> None:
    docs = [d["text"] for d in corpus[300:310]]
    query = "configuration file format"
    # Cold: documents (and query) never seen before, so everything is embedded.
    cold = [
        timed(c, {"query": f"{query} {i}", "documents": [f"[{i}] {d}" for d in docs]})
        for i in range(n // 4)
    ]
    body = {"query": query, "documents": docs}
    for _ in range(2):
        timed(c, body)  # once per replica: both now hold these vectors
    warm = [timed(c, body) for _ in range(n)]
    warm_retrieval = [timed(c, {**body, "generate": False}) for _ in range(n)]
    seed = []
    for _ in range(n // 4):
        start = time.perf_counter()
        vectors = model.embed([query, *docs])
        best = np.argsort(-(vectors[1:] @ vectors[0]))[:3]
        seed.append((time.perf_counter() - start) * 1000)
        assert len(best) == 3
    print(f"inline cold      {summary(cold)}")
    print(f"inline warm      {summary(warm)}")
    print(f"inline warm, retrieval only {summary(warm_retrieval)}")
    print(f"seed algorithm   {summary(seed)}  (in-process, retrieval only)")
    print(
        f"warm vs seed     {statistics.median(seed) / statistics.median(warm):.1f}x faster"
        f" (with answer), {statistics.median(seed) / statistics.median(warm_retrieval):.1f}x"
        " (retrieval only)"
    )


def bench_query_embedding(model: OpenVinoEmbedder, queries: list[str]) -> None:
    model.embed(queries[:5])
    times = []
    for q in queries:
        start = time.perf_counter()
        model.embed([q])
        times.append((time.perf_counter() - start) * 1000)
    print(f"query embedding  {summary(times)}  (in-process, uncached, 1 thread)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    corpus, queries = load_corpus()
    key = ApiKey("bench", new_key())
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        seconds = build_big_collection(state / "ml.sqlite3", args.chunks, corpus)
        print(f"built {args.chunks} chunks in {seconds:.0f}s")
        config = bench_config(state, key)
        with Stack(config, console=None) as stack:
            auth = {"Authorization": f"Bearer {key.key}"}
            internal = {"X-Trine-Internal-Token": stack.internal_token}
            with (
                httpx.Client(base_url=stack.gateway_url, headers=auth, timeout=120) as c,
                GatewayClient(stack.gateway_url, key.key) as client,
                contextlib.ExitStack() as clients,
            ):
                replicas = [
                    clients.enter_context(httpx.Client(base_url=u, headers=internal, timeout=120))
                    for u in stack.ml_urls
                ]
                bench_ingest(client, corpus)
                bench_retrieval(c, replicas, queries, args.queries)
                model = OpenVinoEmbedder.from_packages(threads=1)
                bench_inline(c, model, corpus, args.queries)
                bench_query_embedding(model, queries)


if __name__ == "__main__":
    main()
