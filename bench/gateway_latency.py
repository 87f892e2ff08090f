"""Latency of one RAG query and one sandbox run through the gateway, against direct calls.

Starts a real stack (gateway, two ML replicas, sandbox) on free ports, then alternates calls
through the gateway with the same calls made straight to the internal service (the baseline),
so both see the same machine at the same moment. Prints p50/p90 of each and the ratio of the
medians: what the gateway costs on top of the service behind it.

    .venv/bin/python bench/gateway_latency.py [--requests 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from benchlib import DOCUMENTS, bench_config, pct

from trine.credentials import ApiKey, new_key
from trine.stack import Stack

RAG = {"query": "What runs untrusted code?", "documents": DOCUMENTS}
RUN = {
    "language": "wat",
    "code": '(module (func (export "run") (local i32) (local.set 0 (i32.const 1000))'
    " (loop $l (local.set 0 (i32.sub (local.get 0) (i32.const 1)))"
    " (br_if $l (local.get 0)))))",
}


def timed(call: Callable[[], httpx.Response]) -> float:
    start = time.perf_counter()
    resp = call()
    elapsed = (time.perf_counter() - start) * 1000
    if resp.status_code != 200:
        sys.exit(f"bench: unexpected {resp.status_code}: {resp.text[:200]}")
    return elapsed


def measure(
    name: str,
    via_gateway: Callable[[], httpx.Response],
    direct: Callable[[], httpx.Response],
    n: int,
) -> None:
    for _ in range(3):  # warm caches and connections on both paths
        via_gateway()
        direct()
    gw, base = [], []
    for _ in range(n):
        gw.append(timed(via_gateway))
        base.append(timed(direct))
    ratio = statistics.median(gw) / statistics.median(base)
    print(
        f"{name:<14} gateway p50 {statistics.median(gw):7.2f} ms  p90 {pct(gw, 0.9):7.2f} ms"
        f" | direct p50 {statistics.median(base):7.2f} ms  p90 {pct(base, 0.9):7.2f} ms"
        f" | ratio {ratio:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    key = ApiKey("bench", new_key())
    with tempfile.TemporaryDirectory() as tmp:
        config = bench_config(Path(tmp), key)
        started = time.monotonic()
        with Stack(config, console=None) as stack:
            print(
                f"stack ready in {time.monotonic() - started:.1f}s; {args.requests} requests each"
            )
            auth = {"Authorization": f"Bearer {key.key}"}
            internal = {"X-Trine-Internal-Token": stack.internal_token}
            with httpx.Client(timeout=60) as c:
                gw = stack.gateway_url
                measure(
                    "rag.query",
                    lambda: c.post(f"{gw}/v1/rag/query", json=RAG, headers=auth),
                    lambda: c.post(f"{stack.ml_urls[0]}/rag/query", json=RAG, headers=internal),
                    args.requests,
                )
                measure(
                    "sandbox.run",
                    lambda: c.post(f"{gw}/v1/sandbox/run", json=RUN, headers=auth),
                    lambda: c.post(f"{stack.sandbox_url}/run", json=RUN, headers=internal),
                    args.requests,
                )


if __name__ == "__main__":
    main()
