"""API keys and the internal credential for a local stack.

The gateway stores only SHA-256 hashes of API keys; the raw key is shown once to whoever
creates it. For `trine up` the development key is kept in a git-ignored file so it survives
restarts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ALL_SCOPES = ("rag", "ingest", "sandbox", "jobs", "admin")


@dataclass(frozen=True)
class ApiKey:
    """A raw API key with the id and scopes the gateway knows it by."""

    id: str
    key: str
    scopes: tuple[str, ...] = field(default=ALL_SCOPES)
    # Signs the webhooks of this key's jobs (Standard Webhooks); None: the key sets no webhooks.
    webhook_secret: str | None = None
    # The key's own rate limit; None keeps the gateway's default.
    rate_per_second: float | None = None
    burst: int | None = None

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the raw key, the only form the gateway stores."""
        return hashlib.sha256(self.key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key."""
    return "trn_" + secrets.token_urlsafe(32)


def new_webhook_secret() -> str:
    """A fresh Standard Webhooks signing secret."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_internal_token() -> str:
    """A fresh random credential shared by the gateway and the internal services."""
    return secrets.token_urlsafe(32)


def dev_key(state_dir: Path, from_env: str | None) -> ApiKey:
    """The development key: `from_env` when given, else the saved one, else a new saved one.
    Its webhook secret is kept beside it the same way."""
    secret = _saved(state_dir / "dev-webhook-secret", new_webhook_secret)
    key = from_env or _saved(state_dir / "dev-api-key", new_key)
    return ApiKey(id="dev", key=key, webhook_secret=secret)


def _saved(path: Path, make: Callable[[], str]) -> str:
    """The value saved in `path`, or a new one from `make`, saved there first."""
    if path.exists():
        saved = path.read_text().strip()
        if saved:
            return saved
    value = make()
    _write_private(path, value + "\n")
    return value


def write_keys_file(path: Path, keys: list[ApiKey]) -> None:
    """Write the gateway's keys file: ids, hashes, scopes, webhook secrets and limits, never
    raw keys."""
    entries = []
    for k in keys:
        entry: dict[str, object] = {"id": k.id, "sha256": k.sha256, "scopes": list(k.scopes)}
        if k.webhook_secret:
            entry["webhook_secret"] = k.webhook_secret
        if k.rate_per_second is not None:
            entry["rate_per_second"] = k.rate_per_second
        if k.burst is not None:
            entry["burst"] = k.burst
        entries.append(entry)
    doc = {"keys": entries}
    _write_private(path, json.dumps(doc, indent=2) + "\n")


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
