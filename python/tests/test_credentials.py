from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

from trine.credentials import ALL_SCOPES, ApiKey, dev_key, write_keys_file


def test_keys_file_holds_hashes_not_keys(tmp_path: Path) -> None:
    keys = [ApiKey("dev", "secret-one"), ApiKey("rag", "secret-two", ("rag",))]
    path = tmp_path / "keys.json"
    write_keys_file(path, keys)
    text = path.read_text()
    assert "secret-one" not in text and "secret-two" not in text
    doc = json.loads(text)
    assert doc["keys"][0] == {
        "id": "dev",
        "sha256": hashlib.sha256(b"secret-one").hexdigest(),
        "scopes": list(ALL_SCOPES),
    }
    assert doc["keys"][1]["scopes"] == ["rag"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_dev_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = dev_key(tmp_path, None)
    second = dev_key(tmp_path, None)
    assert first.key == second.key
    assert first.key.startswith("trn_") and len(first.key) > 30
    assert stat.S_IMODE((tmp_path / "dev-api-key").stat().st_mode) == 0o600


def test_dev_key_from_the_environment_wins(tmp_path: Path) -> None:
    dev_key(tmp_path, None)
    assert dev_key(tmp_path, "from-env-key").key == "from-env-key"


def test_dev_key_has_a_kept_webhook_secret_in_the_keys_file(tmp_path: Path) -> None:
    first = dev_key(tmp_path, None)
    assert first.webhook_secret is not None
    assert first.webhook_secret.startswith("whsec_")
    assert len(base64.b64decode(first.webhook_secret.removeprefix("whsec_"))) == 32
    assert dev_key(tmp_path, "from-env-key").webhook_secret == first.webhook_secret
    path = tmp_path / "keys.json"
    write_keys_file(path, [first])
    assert json.loads(path.read_text())["keys"][0]["webhook_secret"] == first.webhook_secret


def test_a_key_can_carry_its_own_rate_limit(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    write_keys_file(path, [ApiKey("slow", "k", ("rag",), rate_per_second=2.5, burst=4)])
    entry = json.loads(path.read_text())["keys"][0]
    assert (entry["rate_per_second"], entry["burst"]) == (2.5, 4)
