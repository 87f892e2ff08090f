"""API keys and the internal credential for a local stack.

The gateway stores only SHA-256 hashes of API keys; the raw key is shown once to whoever
creates it. For `trine up` the development key is kept in a git-ignored file so it survives
restarts.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

ALL_SCOPES = ("rag", "ingest", "sandbox", "jobs", "admin")


@dataclass(frozen=True)
class ApiKey:
    """A raw API key with the id and scopes the gateway knows it by."""

    id: str
    key: str
    scopes: tuple[str, ...] = field(default=ALL_SCOPES)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the raw key, the only form the gateway stores."""
        return hashlib.sha256(self.key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key."""
    return "trn_" + secrets.token_urlsafe(32)


def new_internal_token() -> str:
    """A fresh random credential shared by the gateway and the internal services."""
    return secrets.token_urlsafe(32)


def dev_key(state_dir: Path, from_env: str | None) -> ApiKey:
    """The development key: `from_env` when given, else the saved one, else a new saved one."""
    if from_env:
        return ApiKey(id="dev", key=from_env)
    path = state_dir / "dev-api-key"
    if path.exists():
        saved = path.read_text().strip()
        if saved:
            return ApiKey(id="dev", key=saved)
    key = ApiKey(id="dev", key=new_key())
    _write_private(path, key.key + "\n")
    return key


def write_keys_file(path: Path, keys: list[ApiKey]) -> None:
    """Write the gateway's keys file: ids, hashes and scopes, never raw keys."""
    doc = {"keys": [{"id": k.id, "sha256": k.sha256, "scopes": list(k.scopes)} for k in keys]}
    _write_private(path, json.dumps(doc, indent=2) + "\n")


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
