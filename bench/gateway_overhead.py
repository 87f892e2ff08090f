"""What the Go gateway adds to one HTTP hop, against a direct call and a Python gateway.

Starts, side by side on this machine: a minimal echo upstream, a bare Go relay in front of it
(net/http server and client, nothing else: the cost of a second HTTP hop by itself), the real
gateway in front of it (API key check, rate limiting with limits too high to refuse, metrics,
tracing, access log), and a minimal FastAPI + httpx gateway (key check and relay only). The Go
load generator then measures each path the same way:

- latency at concurrency 1 (closed loop, one request at a time): p50 and p99, in rounds that
  take the paths in turn, so that the host's drift over seconds falls on all of them alike;
  the added latency is the median over rounds of the gateway's figure minus the direct one;
- latency under open-model load at a constant rate (requests start on schedule whatever the
  latency, so queueing is not hidden): p50 and p99;
- maximum throughput with many concurrent closed-loop workers.

It prints the gateway's added latency (its percentile minus the direct one), the bare relay's,
and the gateway's own share (gateway minus bare relay), the throughput ratios and the gateway's
peak RSS, and checks them against the targets.

    make bench-gateway        # or: .venv/bin/python bench/gateway_overhead.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from trine.credentials import ApiKey, new_internal_token, new_key, write_keys_file
from trine.stack import free_port

ROOT = Path(__file__).resolve().parents[1]
PATH = "/v1/rag/query"
TARGETS = {
    "p50_added_us": 150.0,
    "p99_added_us": 500.0,
    "rps_vs_direct": 0.30,
    "rps_vs_python": 10.0,
    "peak_rss_mb": 50.0,
}


def build_load_tool(out: Path) -> Path:
    exe = out / "gatewayload"
    subprocess.run(
        ["go", "build", "-o", str(exe), "."], cwd=ROOT / "bench" / "gatewayload", check=True
    )
    return exe


def start_echo(tmp: Path, procs: list[subprocess.Popen[str]]) -> tuple[Path, str]:
    """Builds the load tool into `tmp` and starts its echo upstream (added to `procs`, which
    the caller stops); returns the tool and the upstream's URL."""
    exe = build_load_tool(tmp)
    echo = subprocess.Popen([str(exe), "echo"], stdout=subprocess.PIPE, text=True)
    procs.append(echo)
    assert echo.stdout is not None
    return exe, "http://" + echo.stdout.readline().strip()


def start_relay(exe: Path, upstream: str, procs: list[subprocess.Popen[str]]) -> str:
    """Starts the load tool's bare relay in front of `upstream` (added to `procs`); returns its
    URL."""
    relay = subprocess.Popen(
        [str(exe), "relay", "-upstream", upstream], stdout=subprocess.PIPE, text=True
    )
    procs.append(relay)
    assert relay.stdout is not None
    return "http://" + relay.stdout.readline().strip()


def gateway_env(
    upstream: str, keys_file: Path, extra: dict[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    """The address and environment of a gateway in front of the echo upstream, with its state
    beside `keys_file` and limits far above what the machine can send: every request is
    checked, none is refused."""
    addr = f"127.0.0.1:{free_port()}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TRINE_", "REDIS_"))}
    return addr, base | {
        "TRINE_GATEWAY_ADDR": addr,
        "TRINE_ML_URLS": upstream,
        "TRINE_SANDBOX_URL": upstream,
        "TRINE_INTERNAL_TOKEN": new_internal_token(),
        "TRINE_KEYS_FILE": str(keys_file),
        "TRINE_JOBS_SQLITE_PATH": str(keys_file.parent / "jobs.sqlite3"),
        "TRINE_RATE_PER_SECOND": "1000000000",
        "TRINE_RATE_BURST": "1000000000",
        "TRINE_MAX_IN_FLIGHT": "100000",
        **(extra or {}),
    }


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {url} did not answer in {timeout:.0f}s")
        time.sleep(0.1)


def run_load(exe: Path, url: str, key: str, *args: str) -> dict[str, float]:
    out = subprocess.run(
        [str(exe), "load", "-url", url, "-key", key, *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=3.0,
        help="measurement time per run; each concurrency-1 round takes half of it",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of the concurrency-1 runs, paths in turn"
    )
    parser.add_argument("--rate", type=float, default=500.0, help="open-model request rate")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop workers")
    parser.add_argument(
        "--gateway-gomaxprocs",
        type=int,
        default=0,
        help="GOMAXPROCS for the gateway (0: Go's default, one per core); on a small machine "
        "shared with the upstream and the load generator, 1 spares thread wake-ups",
    )
    args = parser.parse_args()
    dur = f"{args.seconds}s"

    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="trine-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            exe, upstream = start_echo(tmp, procs)
            relay = start_relay(exe, upstream, procs)

            key = ApiKey(id="bench", key=new_key(), scopes=("rag",))
            keys_file = tmp / "keys.json"
            write_keys_file(keys_file, [key])
            base_env = {k: v for k, v in os.environ.items() if not k.startswith("TRINE_")}
            gomaxprocs = args.gateway_gomaxprocs
            procs_env = {"GOMAXPROCS": str(gomaxprocs)} if gomaxprocs else {}
            gw_addr, gw_env = gateway_env(upstream, keys_file, procs_env)
            gateway = subprocess.Popen(
                [str(ROOT / "bin" / "trine-gateway")], env=gw_env, stderr=subprocess.DEVNULL
            )
            procs.append(gateway)

            py_port = free_port()
            py_env = base_env | {"BASELINE_UPSTREAM": upstream, "BASELINE_KEY_SHA256": key.sha256}
            python = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "gateway_python_baseline:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(py_port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                cwd=ROOT / "bench",
                env=py_env,
                stderr=subprocess.DEVNULL,
            )
            procs.append(python)

            wait_http(upstream + "/healthz")
            wait_http(relay + "/healthz")
            wait_http(f"http://{gw_addr}/readyz")
            wait_http(f"http://127.0.0.1:{py_port}/docs")

            paths = {
                "direct": upstream + "/rag/query",
                "relay": relay + "/rag/query",
                "gateway": f"http://{gw_addr}{PATH}",
                "python": f"http://127.0.0.1:{py_port}{PATH}",
            }
            # Latency at c=1 is a matter of microseconds, and the host's speed drifts over
            # seconds: the paths take turns, round by round, so each round compares them
            # under the same conditions.
            rounds: list[dict[str, dict[str, float]]] = []
            round_dur = f"{args.seconds / 2:g}s"
            for i in range(args.rounds):
                print(f"bench: concurrency 1, round {i + 1} of {args.rounds} ...", file=sys.stderr)
                rounds.append(
                    {
                        name: run_load(
                            exe, url, key.key, "-concurrency", "1", "-duration", round_dur
                        )
                        for name, url in paths.items()
                    }
                )
            results: dict[str, dict[str, dict[str, float]]] = {}
            for name, url in paths.items():
                print(f"bench: measuring {name} ...", file=sys.stderr)
                results[name] = {
                    "c1": median_run([r[name] for r in rounds]),
                    "open": run_load(exe, url, key.key, "-rate", str(args.rate), "-duration", dur),
                    "max": run_load(
                        exe, url, key.key, "-concurrency", str(args.concurrency), "-duration", dur
                    ),
                }
            rss = peak_rss_mb(gateway.pid)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=10)

    report(results, rounds, rss, args)
    return 0


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median of each figure over the rounds of one path."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def report(
    results: dict[str, dict[str, dict[str, float]]],
    rounds: list[dict[str, dict[str, float]]],
    rss: float,
    args: argparse.Namespace,
) -> None:
    d, b, g, p = results["direct"], results["relay"], results["gateway"], results["python"]
    print("\nconcurrency 1, p50 by round (µs):")
    for name in results:
        print(f"  {name:<9}" + "".join(f"{r[name]['p50_us']:>9.0f}" for r in rounds))
    per_round = [r["gateway"]["p50_us"] - r["direct"]["p50_us"] for r in rounds]
    print("  added    " + "".join(f"{a:>9.0f}" for a in per_round))
    print(
        f"\n{'path':<9}{'c=1 p50':>10}{'c=1 p99':>10}{'open p50':>10}{'open p99':>10}"
        f"{'max rps':>10}{'errors':>8}"
    )
    for name, r in results.items():
        errors = sum(int(r[k]["errors"]) for k in r)
        print(
            f"{name:<9}{r['c1']['p50_us']:>8.0f}µs{r['c1']['p99_us']:>8.0f}µs"
            f"{r['open']['p50_us']:>8.0f}µs{r['open']['p99_us']:>8.0f}µs"
            f"{r['max']['rps']:>10.0f}{errors:>8}"
        )
    # Added latency is the median over rounds of the gateway's figure minus the direct
    # path's in the same round.
    added = {
        f"{q}_added_us": statistics.median(
            r["gateway"][f"{q}_us"] - r["direct"][f"{q}_us"] for r in rounds
        )
        for q in ("p50", "p99")
    }
    open_added = (
        g["open"]["p50_us"] - d["open"]["p50_us"],
        g["open"]["p99_us"] - d["open"]["p99_us"],
    )
    checks = {
        **added,
        "rps_vs_direct": g["max"]["rps"] / d["max"]["rps"],
        "rps_vs_python": g["max"]["rps"] / p["max"]["rps"],
        "peak_rss_mb": rss,
    }
    print(
        f"\ngateway added latency at c=1: p50 {added['p50_added_us']:.0f} µs, "
        f"p99 {added['p99_added_us']:.0f} µs"
    )
    print(
        f"bare relay added latency at c=1: p50 {b['c1']['p50_us'] - d['c1']['p50_us']:.0f} µs, "
        f"p99 {b['c1']['p99_us'] - d['c1']['p99_us']:.0f} µs"
    )
    print(
        f"gateway above the bare relay at c=1: p50 {g['c1']['p50_us'] - b['c1']['p50_us']:.0f} µs, "
        f"p99 {g['c1']['p99_us'] - b['c1']['p99_us']:.0f} µs"
    )
    print(
        f"gateway added latency at {args.rate:.0f} req/s: p50 {open_added[0]:.0f} µs, "
        f"p99 {open_added[1]:.0f} µs"
    )
    print(
        f"max rps: gateway/direct {checks['rps_vs_direct']:.2f}, "
        f"gateway/python {checks['rps_vs_python']:.1f}x; "
        f"python/direct {p['max']['rps'] / d['max']['rps']:.2f}"
    )
    print(f"gateway peak RSS {rss:.1f} MB\n")
    for name, value in checks.items():
        target = TARGETS[name]
        lower_is_better = name.endswith(("_us", "_mb"))
        met = value <= target if lower_is_better else value >= target
        sign = "<=" if lower_is_better else ">="
        print(f"  {'met ' if met else 'MISS'} {name:<15} {value:10.2f}  (target {sign} {target})")


if __name__ == "__main__":
    sys.exit(main())
