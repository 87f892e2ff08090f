"""The `trine` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from trine.commands import add_commands
from trine.credentials import ApiKey, dev_key
from trine.stack import Stack, StackConfig, StackError

EXAMPLE_RAG = {
    "query": "What runs untrusted code?",
    "documents": [
        "The gateway checks API keys, applies rate limits and routes each request.",
        "The ML service embeds documents and answers questions from the best passages.",
        "The sandbox runs untrusted WebAssembly under fuel, memory and time limits.",
    ],
}
EXAMPLE_SANDBOX = {
    "language": "wat",
    "code": (
        '(module (import "wasi_snapshot_preview1" "fd_write"'
        " (func $write (param i32 i32 i32 i32) (result i32)))"
        ' (memory (export "memory") 1) (data (i32.const 16) "hello from the sandbox\\n")'
        ' (func (export "run") (i32.store (i32.const 0) (i32.const 16))'
        " (i32.store (i32.const 4) (i32.const 23))"
        " (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"
    ),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `trine` command."""
    parser = argparse.ArgumentParser(prog="trine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the built stack locally and wait for Ctrl-C")
    up.add_argument("--root", type=Path, default=Path.cwd(), help="the trine checkout")
    up.add_argument("--ml-replicas", type=int, default=2)
    add_commands(sub)
    args = parser.parse_args(argv)
    if args.command != "up":
        code: int = args.run(args)
        return code
    return _up(args.root.resolve(), args.ml_replicas)


def _up(root: Path, ml_replicas: int) -> int:
    if ml_replicas < 1:
        print("trine: --ml-replicas must be at least 1", file=sys.stderr)
        return 2
    state_dir = root / ".trine"
    key = dev_key(state_dir, os.environ.get("TRINE_API_KEY"))
    config = StackConfig(
        bin_dir=root / "bin",
        python=root / ".venv" / "bin" / "python",
        state_dir=state_dir,
        keys=[key],
        gateway_addr=os.environ.get("TRINE_GATEWAY_ADDR", "127.0.0.1:8080"),
        ml_replicas=ml_replicas,
        base_env=dict(os.environ),
    )
    # SIGTERM ends the launcher like Ctrl-C does, so the finally below stops every child.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    stack = Stack(config)
    started = time.monotonic()
    try:
        stack.start()
        _print_banner(stack.gateway_url, key, time.monotonic() - started)
        while (dead := stack.first_exited()) is None:
            time.sleep(0.5)
        print(f"trine: {dead.spec.name} exited with code {dead.exited()}; stopping", flush=True)
        return 1
    except StackError as err:
        print(f"trine: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ntrine: stopping", flush=True)
        return 0
    finally:
        stack.stop()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _print_banner(url: str, key: ApiKey, seconds: float) -> None:
    job = {"type": "sandbox.run", "input": EXAMPLE_SANDBOX}
    print(
        f"""
trine is ready at {url} (started in {seconds:.1f}s)
API key (all scopes): {key.key}
Webhook signing secret of that key: {key.webhook_secret}

Try:
  curl -s {url}/v1/rag/query -H "Authorization: Bearer {key.key}" \\
    -H 'Content-Type: application/json' -d '{json.dumps(EXAMPLE_RAG)}'

  curl -s {url}/v1/sandbox/run -H "Authorization: Bearer {key.key}" \\
    -H 'Content-Type: application/json' -d '{json.dumps(EXAMPLE_SANDBOX)}'

  curl -s {url}/v1/jobs -H "Authorization: Bearer {key.key}" \\
    -H 'Content-Type: application/json' -d '{json.dumps(job)}'
  (then GET {url}/v1/jobs/<id> with the same header until "status" is "succeeded")

Press Ctrl-C to stop.
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
