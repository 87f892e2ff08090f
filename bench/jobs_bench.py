"""Async jobs: enqueue latency through the gateway, and jobs/s against the same work done
synchronously through the gateway at the same concurrency.

For each queue backend (SQLite; Redis Streams too, on a private redis-server, when installed)
and each worker count (1, 2), starts a real stack, then:
- enqueue: sequential POST /v1/jobs of a trivial sandbox.run (p50/p99) from this Python
  process (beside its GET /healthz, the floor of one round trip for this client) and from the
  Go load generator of the gateway benchmark (beside a synchronous sandbox.run);
- throughput against N synchronous calls made by as many client threads as there are workers
  (the baseline, measured in the same stack right before): N jobs queued while the workers are
  stopped, then drained (jobs/s between the completions, from their `updated_at`: what the
  queue and the workers sustain), and N jobs submitted while the workers run (first submit to
  last completion: submission competes with the work for the same two cores).

    .venv/bin/python bench/jobs_bench.py [--jobs 200] [--enqueue 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from benchlib import DOCUMENTS, bench_config, pct
from gateway_overhead import build_load_tool, run_load

from trine.credentials import ApiKey, new_key
from trine.redis_server import redis_server
from trine.stack import Stack

HELLO_WAT = (
    '(module (import "wasi_snapshot_preview1" "fd_write"'
    " (func $w (param i32 i32 i32 i32) (result i32)))"
    ' (memory (export "memory") 1) (data (i32.const 16) "hi\\n")'
    ' (func (export "run") (i32.store (i32.const 0) (i32.const 16))'
    " (i32.store (i32.const 4) (i32.const 3))"
    " (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"
)
WORK = {
    "sandbox.run": ("/v1/sandbox/run", {"language": "wat", "code": HELLO_WAT}),
    "rag.query": ("/v1/rag/query", {"query": "What runs untrusted code?", "documents": DOCUMENTS}),
}


def ok(resp: httpx.Response, status: int) -> httpx.Response:
    if resp.status_code != status:
        sys.exit(f"bench: {resp.request.url.path} answered {resp.status_code}: {resp.text[:300]}")
    return resp


def timed_ms(call: Any) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def enqueue_latency(client: httpx.Client, n: int) -> tuple[list[float], list[float]]:
    body = {"type": "sandbox.run", "input": WORK["sandbox.run"][1]}
    for _ in range(10):  # warm connections and caches
        ok(client.post("/v1/jobs", json=body), 202)
    enqueue, floor = [], []
    for _ in range(n):
        enqueue.append(timed_ms(lambda: ok(client.post("/v1/jobs", json=body), 202)))
        floor.append(timed_ms(lambda: ok(client.get("/healthz"), 200)))
    return enqueue, floor


def enqueue_report(stack: Stack, client: httpx.Client, key: ApiKey, load_tool: Path, n: int) -> str:
    """Enqueue latency from this process and from the Go load generator, with their floors."""
    enqueue, floor = enqueue_latency(client, n)
    job = json.dumps({"type": "sandbox.run", "input": WORK["sandbox.run"][1]})
    run = json.dumps(WORK["sandbox.run"][1])
    common = ("-duration", "2s", "-warmup", "50")
    go = run_load(
        load_tool, f"{stack.gateway_url}/v1/jobs", key.key, "-body", job, "-expect", "202", *common
    )
    sync = run_load(
        load_tool, f"{stack.gateway_url}/v1/sandbox/run", key.key, "-body", run, *common
    )
    return (
        f"Python client p50 {pct(enqueue, 0.5):.2f} ms p99 {pct(enqueue, 0.99):.2f} ms "
        f"(its GET /healthz p50 {pct(floor, 0.5):.2f} ms) | Go client p50 "
        f"{go['p50_us'] / 1000:.2f} ms p99 {go['p99_us'] / 1000:.2f} ms (a synchronous "
        f"sandbox.run p50 {sync['p50_us'] / 1000:.2f} ms)"
    )


def drain(client: httpx.Client) -> None:
    """Wait until the enqueue measurement's jobs are done, so they do not skew throughput."""
    while True:
        probe = ok(
            client.post("/v1/jobs", json={"type": "sandbox.run", "input": WORK["sandbox.run"][1]}),
            202,
        )
        if wait_done(client, [probe.json()["id"]], timeout=600) is not None:
            return


def wait_done(client: httpx.Client, ids: list[str], timeout: float) -> float | None:
    """The latest completion time (epoch seconds) of `ids` once all finished, else None."""
    deadline = time.monotonic() + timeout
    latest = 0.0
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        job = ok(client.get(f"/v1/jobs/{pending[-1]}"), 200).json()
        if job["status"] == "failed":
            sys.exit(f"bench: job failed: {job['error']}")
        if job["status"] == "succeeded":
            latest = max(latest, datetime.fromisoformat(job["updated_at"]).timestamp())
            pending.pop()
        else:
            time.sleep(0.05)
    return latest if not pending else None


def completion_times(client: httpx.Client, ids: list[str]) -> list[float]:
    """When each job finished (epoch seconds, its `updated_at`), sorted."""
    return sorted(
        datetime.fromisoformat(
            ok(client.get(f"/v1/jobs/{i}"), 200).json()["updated_at"]
        ).timestamp()
        for i in ids
    )


def submit_all(client: httpx.Client, kind: str, n: int) -> list[str]:
    job = {"type": kind, "input": WORK[kind][1]}
    with ThreadPoolExecutor(4) as pool:
        return list(
            pool.map(lambda _: ok(client.post("/v1/jobs", json=job), 202).json()["id"], range(n))
        )


def throughput(
    stack: Stack, client: httpx.Client, kind: str, n: int, backlog: int, workers: int
) -> tuple[float, float, float]:
    """For n units of `kind`: synchronous calls/s with `workers` client threads; jobs/s
    draining a backlog queued while the workers were stopped (the queue and workers alone);
    and jobs/s end to end, submitting while the workers run."""
    path, body = WORK[kind]
    for _ in range(5):
        ok(client.post(path, json=body), 200)
    with ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        list(pool.map(lambda _: ok(client.post(path, json=body), 200), range(n)))
        sync_rate = n / (time.perf_counter() - start)

    names = [f"worker-{i}" for i in range(workers)]
    for name in names:
        stack.stop_service(name)
    # Large enough that plenty is left once the slowest worker has loaded its model.
    ids = submit_all(client, kind, backlog)
    starts = {name: stack.log_text(name).count('"worker_ready"') for name in names}
    for name in names:
        stack.restart(name)
    # Counted once every worker is up: their start-up (loading the model) is not the queue's
    # speed, and a worker still loading takes a core from the one already working.
    while any(stack.log_text(name).count('"worker_ready"') == starts[name] for name in names):
        time.sleep(0.01)
    ready = time.time()
    if wait_done(client, ids, timeout=1800) is None:
        sys.exit(f"bench: {kind} jobs did not finish")
    done = [t for t in completion_times(client, ids) if t > ready]
    if len(done) < backlog // 4:
        sys.exit(f"bench: only {len(done)} jobs were left when the workers were ready")
    backlog_rate = len(done) / (done[-1] - ready)

    start = time.time()
    ids = submit_all(client, kind, n)
    end = wait_done(client, ids, timeout=1800)
    if end is None:
        sys.exit(f"bench: {kind} jobs did not finish")
    return sync_rate, backlog_rate, n / (end - start)


def run_one(
    backend: str, redis_url: str | None, workers: int, load_tool: Path, args: argparse.Namespace
) -> None:
    key = ApiKey(id="bench", key=new_key())
    shared = {"TRINE_JOBS_BACKEND": backend}
    if redis_url is not None:
        shared["REDIS_URL"] = redis_url
    with tempfile.TemporaryDirectory() as tmp:
        env = {"gateway": shared, "worker": shared}
        config = bench_config(Path(tmp), key, env=env, workers=workers, log_dir=Path(tmp) / "logs")
        with Stack(config, console=None) as stack:
            headers = {"Authorization": f"Bearer {key.key}"}
            with httpx.Client(base_url=stack.gateway_url, headers=headers, timeout=120) as c:
                line = enqueue_report(stack, c, key, load_tool, args.enqueue)
                drain(c)
                print(f"{backend:6} workers={workers} enqueue: {line}", flush=True)
                for kind in WORK:
                    sync, backlog, open_ = throughput(
                        stack, c, kind, args.jobs, args.backlog, workers
                    )
                    print(
                        f"{backend:6} workers={workers} {kind:11} sync {sync:6.1f}/s | jobs "
                        f"from a backlog {backlog:6.1f}/s ({backlog / sync:.2f}x) | submitted "
                        f"meanwhile {open_:6.1f}/s ({open_ / sync:.2f}x)",
                        flush=True,
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per throughput run")
    parser.add_argument("--enqueue", type=int, default=200, help="enqueue samples")
    parser.add_argument("--backlog", type=int, default=1500, help="jobs queued before draining")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tools:
        run_all(build_load_tool(Path(tools)), args)


def run_all(load_tool: Path, args: argparse.Namespace) -> None:
    for workers in (1, 2):
        run_one("sqlite", None, workers, load_tool, args)
    if shutil.which("redis-server") is None:
        print("bench: redis-server is not installed; SQLite only", flush=True)
        return
    for workers in (1, 2):
        with redis_server() as url:
            run_one("redis", url, workers, load_tool, args)


if __name__ == "__main__":
    main()
