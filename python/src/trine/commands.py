"""The commands that talk to a running gateway: `trine eval` and `trine ingest`."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from trine.evaluate import MODES, evaluate, format_table
from trine.gateway_client import GatewayClient, GatewayError
from trine.ingest_files import UnsupportedFile, ingest_files

DEFAULT_GATEWAY = "http://127.0.0.1:8080"


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers the commands on the `trine` parser; each sets ``run``."""
    ev = sub.add_parser("eval", help="ingest a BEIR-style set and score retrieval by mode")
    _gateway_options(ev)
    ev.add_argument(
        "--data", type=Path, required=True, help="corpus.jsonl, queries.jsonl, qrels.tsv"
    )
    ev.add_argument("--mode", choices=[*MODES, "all"], default="all")
    ev.add_argument("--collection", help="default: eval-<data directory name>")
    ev.add_argument("--skip-ingest", action="store_true", help="the collection is already there")
    ev.set_defaults(run=_eval)

    ing = sub.add_parser("ingest", help="store .txt/.md/.html/.pdf files in a collection")
    _gateway_options(ing)
    ing.add_argument("--collection", required=True)
    ing.add_argument("files", nargs="+", type=Path)
    ing.set_defaults(run=_ingest)


def _gateway_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gateway", default=os.environ.get("TRINE_GATEWAY_URL", DEFAULT_GATEWAY), help="base URL"
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("TRINE_API_KEY"),
        help="API key (default $TRINE_API_KEY, else .trine/dev-api-key)",
    )


def _key(args: argparse.Namespace) -> str | None:
    if args.key:
        return str(args.key)
    saved = Path(".trine") / "dev-api-key"
    return saved.read_text().strip() if saved.exists() else None


def _eval(args: argparse.Namespace) -> int:
    key = _key(args)
    if key is None:
        print("trine eval: no API key (--key or TRINE_API_KEY)", file=sys.stderr)
        return 2
    name = args.collection or "eval-" + re.sub(r"[^a-z0-9_-]+", "-", args.data.name.lower())[:50]
    modes = MODES if args.mode == "all" else (args.mode,)
    try:
        with GatewayClient(args.gateway, key) as client:
            results = evaluate(
                client, args.data, collection=name, modes=modes, skip_ingest=args.skip_ingest
            )
    except (GatewayError, OSError) as err:
        print(f"trine eval: {err}", file=sys.stderr)
        return 1
    print(format_table(results))
    return 0


def _ingest(args: argparse.Namespace) -> int:
    key = _key(args)
    if key is None:
        print("trine ingest: no API key (--key or TRINE_API_KEY)", file=sys.stderr)
        return 2
    try:
        with GatewayClient(args.gateway, key) as client:
            files, chunks = ingest_files(client, args.collection, args.files)
    except (GatewayError, UnsupportedFile, OSError) as err:
        print(f"trine ingest: {err}", file=sys.stderr)
        return 1
    print(f"{args.collection}: {files} files, {chunks} chunks")
    return 0
