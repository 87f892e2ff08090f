"""What every benchmark script shares: percentiles, a stack config for a private stack, and a
small set of inline documents."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trine.credentials import ApiKey
from trine.stack import StackConfig, free_port

ROOT = Path(__file__).resolve().parents[1]

#: Inline documents for RAG queries: the question "What runs untrusted code?" is about the third.
DOCUMENTS = [
    "The gateway checks API keys, applies rate limits and routes each request.",
    "The ML service embeds documents and answers questions from the best passages.",
    "The sandbox runs untrusted WebAssembly under fuel, memory and time limits.",
    "Paris is the capital of France.",
    "Bananas are rich in potassium.",
]


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_config(
    state_dir: Path, key: ApiKey, env: dict[str, dict[str, str]] | None = None, **overrides: Any
) -> StackConfig:
    """A stack of the checkout's binaries on a free port, with the caller's environment minus
    trine's own settings, and a per-key rate limit high enough never to refuse: benchmarks
    measure latency and throughput, not the limiter. `env` adds variables per service kind."""
    kinds: dict[str, dict[str, str]] = {
        "gateway": {"TRINE_RATE_PER_SECOND": "100000", "TRINE_RATE_BURST": "100000"}
    }
    for kind, values in (env or {}).items():
        kinds[kind] = kinds.get(kind, {}) | values
    values: dict[str, Any] = {
        "bin_dir": ROOT / "bin",
        "python": ROOT / ".venv" / "bin" / "python",
        "state_dir": state_dir,
        "keys": [key],
        "gateway_addr": f"127.0.0.1:{free_port()}",
        "base_env": {
            k: v for k, v in os.environ.items() if not k.startswith(("TRINE_", "ANTHROPIC_"))
        },
        "env": kinds,
    }
    values.update(overrides)
    return StackConfig(**values)
